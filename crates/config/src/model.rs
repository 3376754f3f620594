//! The configuration the program uses: every value parsed, every default resolved.
//!
//! Nothing here is optional by accident: `Option` means "the operator may leave
//! this out and the feature is then off", never "not yet defaulted".

use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use tandem_core::{BackendAddress, ListenAddress, Protocol};
pub use tandem_core::{Forwarding, HashKey, OnAllDown, ProxyVersion, SchedulerKind};

/// A whole, validated configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `None` when the `admin` section is absent: no admin endpoint.
    pub admin: Option<Admin>,
    pub runtime: Runtime,
    pub services: Vec<Service>,
    pub vrrp: Vrrp,
    /// `None` when the `routing` section is absent: nothing is announced.
    pub routing: Option<Routing>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Default 127.0.0.1:9901.
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// `None`: one worker thread per CPU.
    pub worker_threads: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub protocol: Protocol,
    pub listen: ListenAddress,
    /// Default `round_robin`.
    pub scheduler: SchedulerKind,
    /// Default `source_ip`; used by `source_hash`.
    pub hash_key: HashKey,
    pub on_all_down: OnAllDown,
    /// Default 3s.
    pub connect_timeout: Duration,
    /// How many other backends to try after a failed connect. Default 2.
    pub connect_retries: u32,
    /// Default 1h.
    pub idle_timeout: Duration,
    /// Default 30s.
    pub drain_timeout: Duration,
    pub forwarding: Forwarding,
    /// `None`: unlimited.
    pub max_connections: Option<NonZeroU32>,
    /// TCP keepalive on both legs (default true).
    pub tcp_keepalive: bool,
    pub access_log: bool,
    /// `forwarding: nat` only: count each flow's bytes with a rule on every
    /// packet (default true); off, only new flows are counted.
    pub nat_byte_counters: bool,
    pub backends: Vec<BackendSpec>,
    pub health: Health,
    pub udp: Udp,
    /// Who may connect, checked before any backend is contacted.
    pub admission: Admission,
}

/// A service's admission rules (`allow`, `deny`, `limits`,
/// `proxy_protocol.accept`). Empty lists and `None`s admit everyone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Admission {
    /// When not empty, only clients in one of these may connect.
    pub allow: Vec<IpPrefix>,
    /// Clients in one of these are refused, whatever `allow` says.
    pub deny: Vec<IpPrefix>,
    /// `proxy_protocol.accept: true`: every connection must come from a
    /// trusted address and start with a PROXY header.
    pub proxy_accept: Option<ProxyAccept>,
    pub limits: SourceLimits,
}

impl Admission {
    /// No rule at all: every connection is admitted without a look.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty()
            && self.deny.is_empty()
            && self.proxy_accept.is_none()
            && self.limits.is_off()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyAccept {
    pub trusted: Vec<IpPrefix>,
    /// How long the whole header may take to arrive. Default 3s.
    pub timeout: Duration,
}

/// Per-source limits; a source is the client address cut to its prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceLimits {
    pub connections_per_source: Option<NonZeroU32>,
    pub new_connections_per_source: Option<Rate>,
    /// Default 32: every IPv4 address is its own source.
    pub ipv4_prefix: u8,
    /// Default 128.
    pub ipv6_prefix: u8,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            connections_per_source: None,
            new_connections_per_source: None,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        }
    }
}

impl SourceLimits {
    pub fn is_off(&self) -> bool {
        self.connections_per_source.is_none() && self.new_connections_per_source.is_none()
    }
}

/// `N/s` or `N/m`: at most `count` per `per`, with bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    pub address: BackendAddress,
    pub name: Option<String>,
    /// 1..=256, default 1.
    pub weight: NonZeroU32,
    pub backup: bool,
    /// The PROXY header written to this backend before the client's first
    /// byte: the backend's own `proxy_protocol`, else the service's `send`.
    pub send_proxy: Option<ProxyVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthKind {
    None,
    Tcp,
    Http,
    Https,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `HealthKind::None` when neither the service nor `defaults` has a `health` section.
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: NonZeroU32,
    pub fall: NonZeroU32,
    /// Default `down` for probed backends, `up` for `none`.
    pub initial: InitialState,
    pub port: Option<u16>,
    pub path: String,
    pub expect_status: Vec<u16>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    /// UDP probe payload and expected reply substring.
    pub send: Option<String>,
    pub expect: Option<String>,
    pub tls: Tls,
    /// Passive ejection after this many consecutive connect failures; `None` = off.
    pub eject_after: Option<NonZeroU32>,
}

impl Health {
    /// Passive ejection, the one rule the listener (TCP and UDP) and the
    /// health checker share: mark a backend down after `consecutive_failures`
    /// failed connects in a row only when `eject_after` is set, the count has
    /// reached it, **and** an active probe runs: with `type: none` nothing
    /// would ever bring the backend back.
    pub fn should_eject(&self, consecutive_failures: u32) -> bool {
        self.kind != HealthKind::None
            && self
                .eject_after
                .is_some_and(|limit| consecutive_failures >= limit.get())
    }

    /// Whether a backend new to the service starts up: always without a
    /// probe, else as `initial` says.
    pub fn starts_up(&self) -> bool {
        self.kind == HealthKind::None || self.initial == InitialState::Up
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub verify: bool,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Udp {
    /// Default 30s.
    pub session_timeout: Duration,
    pub max_sessions: Option<NonZeroU32>,
    pub replies_per_request: Option<NonZeroU32>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Vrrp {
    pub instances: Vec<VrrpInstance>,
}

/// VIPs announced by installing a host route into a kernel table that a
/// routing daemon (BIRD, FRR) exports over BGP: see docs/bgp.md.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    /// The kernel routing table tandem owns (default 250).
    pub table: u32,
    /// The route protocol number of tandem's routes (default 250).
    pub protocol: u8,
    /// The interface the routes point at, which tandem creates and holds:
    /// it vanishes with the process, and so do its routes (default `tandem-routes`).
    pub device: String,
    /// The interface of each VIP's local route (default `lo`).
    pub vip_interface: String,
    /// At SIGTERM, how long listeners keep accepting after the withdrawal,
    /// for the routers to move flows away (default 2s).
    pub withdraw_delay: Duration,
    pub vips: Vec<RoutedVip>,
}

/// One announced address and the services whose health it follows.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedVip {
    pub address: IpAddr,
    /// Announced only while every one has a healthy, non-draining backend.
    pub services: Vec<String>,
}

/// An address with its prefix length, as in `198.18.0.100/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl IpPrefix {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 client (a
    /// dual-stack listener's view of an IPv4 one) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub virtual_ips: Vec<IpPrefix>,
    pub track: Track,
    pub notify: Notify,
    pub unicast_peers: Vec<IpAddr>,
    /// How long a node that has just started listens, on top of the
    /// Master_Down_Interval, before it may become master. Default: one
    /// Master_Down_Interval of this instance (3 × advert_interval + skew);
    /// zero turns the hold-off off. The address owner (priority 255) does not wait.
    pub startup_delay: Duration,
    pub garp: Garp,
    /// How the IPv4 advert checksum is computed; always `PseudoHeader` for IPv6.
    pub checksum: VrrpChecksum,
}

/// The priority of a `vrrp` instance that sets none.
pub const DEFAULT_VRRP_PRIORITY: u8 = 100;

/// Skew_Time = ((256 − priority) × interval) / 256 (RFC 9568 §6.1).
pub fn skew_time(priority: u8, interval: Duration) -> Duration {
    interval * (256 - u32::from(priority)) / 256
}

/// Master_Down_Interval = 3 × interval + Skew_Time (RFC 9568 §6.1).
pub fn master_down_interval(priority: u8, interval: Duration) -> Duration {
    interval * 3 + skew_time(priority, interval)
}

/// Gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6) sent
/// for the virtual IPs by a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garp {
    /// How many are sent on becoming master (and on hearing a lower-priority
    /// master). 1..=100, default 5.
    pub repeat: u32,
    /// Time between those. Default 1s; zero sends them back to back.
    pub interval: Duration,
    /// While master, one more every `refresh`. Default 60s; zero turns it off.
    pub refresh: Duration,
}

/// The IPv4 VRRPv3 checksum has two readings in the wild (docs/vrrp.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpChecksum {
    /// Over an IPv4 pseudo-header and the message, as RFC 5798 is read by
    /// keepalived (its default) and FRR (its default). tandem's default.
    PseudoHeader,
    /// Over the message only, as RFC 9568 §5.2.8 says for IPv4 (Cisco,
    /// Arista, keepalived's `v3_checksum_as_v2`).
    NoPseudoHeader,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Track {
    pub services: Vec<String>,
    /// Priority change while a tracked service has no healthy backend (negative).
    pub weight: i32,
    /// The configured priorities of the other nodes of this instance, when
    /// the operator writes them down: only used to check that a tracked
    /// failure can move the VIP (`tandem check`). Empty: unknown.
    pub peer_priorities: Vec<u8>,
}

/// Commands run when an instance changes state, as written; split with
/// [`split_command`], run without a shell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
}

/// Splits a command line into arguments the way a POSIX shell splits words,
/// without expanding anything: blanks separate words; `'…'` keeps everything
/// literally; `"…"` keeps everything but lets `\` escape `"`, `\`, `$` and
/// `` ` ``; a `\` outside quotes escapes the next character. No globbing, no
/// variables, no pipes: for those write `sh -c '…'` explicitly.
pub fn split_command(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".to_owned()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".to_owned()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a trailing `\\` escapes nothing".to_owned()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("names no program".to_owned());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A validated tcp check, to vary field by field.
    fn health(kind: HealthKind) -> Health {
        let yaml = "services:\n  - name: s\n    listen: 127.0.0.1:1\n    backends: [{ address: 127.0.0.1:2 }]\n    health: { type: tcp }\n";
        let mut h = crate::parse(yaml, "test").unwrap().services[0]
            .health
            .clone();
        h.kind = kind;
        h
    }

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
                h.should_eject(failures),
                want,
                "{kind:?} eject_after={eject_after:?} failures={failures}"
            );
        }
    }

    #[test]
    fn prefixes_contain_their_addresses_and_mapped_ones() {
        let net = |a: &str, l| IpPrefix {
            address: a.parse().unwrap(),
            prefix_len: l,
        };
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let cases = [
            (net("198.18.0.0", 15), "198.19.255.255", true),
            (net("198.18.0.0", 15), "198.20.0.1", false),
            (net("198.18.0.7", 32), "198.18.0.7", true),
            (net("198.18.0.7", 32), "198.18.0.8", false),
            (net("0.0.0.0", 0), "203.0.113.9", true),
            (net("198.18.0.0", 16), "::ffff:198.18.3.4", true),
            (net("2001:db8::", 32), "2001:db8:ffff::1", true),
            (net("2001:db8::", 32), "2001:db9::1", false),
            (net("::", 0), "::1", true),
            (net("::", 0), "127.0.0.1", false),
        ];
        for (n, a, want) in cases {
            assert_eq!(n.contains(ip(a)), want, "{n} {a}");
        }
    }

    #[test]
    fn only_probed_backends_may_start_down() {
        let mut h = health(HealthKind::Tcp);
        assert!(!h.starts_up(), "a probed backend waits for its first rise");
        h.initial = InitialState::Up;
        assert!(h.starts_up());
        let mut none = health(HealthKind::None);
        none.initial = InitialState::Down;
        assert!(none.starts_up(), "nothing would ever bring it up");
    }

    fn split(s: &str) -> Vec<String> {
        split_command(s).unwrap()
    }

    #[test]
    fn commands_split_like_a_shell_without_expansion() {
        assert_eq!(
            split("/etc/tandem/notify master"),
            ["/etc/tandem/notify", "master"]
        );
        assert_eq!(split("  a   b\tc "), ["a", "b", "c"]);
        assert_eq!(split("logger 'VIP moved: $1'"), ["logger", "VIP moved: $1"]);
        assert_eq!(
            split(r#"sh -c "echo \"hi\" \$HOME \n" x"#),
            ["sh", "-c", r#"echo "hi" $HOME \n"#, "x"]
        );
        assert_eq!(split(r"a\ b c"), ["a b", "c"]);
        assert_eq!(split("'' x"), ["", "x"]);
        assert_eq!(split("a'b'\"c\"d"), ["abcd"]);
        assert_eq!(split("*.sh ~ $X"), ["*.sh", "~", "$X"]);
    }

    #[test]
    fn broken_quoting_is_an_error() {
        for bad in ["'open", "\"open", "x \\", "", "   "] {
            assert!(split_command(bad).is_err(), "{bad:?}");
        }
    }
}
