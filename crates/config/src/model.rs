//! The configuration the program uses: every value parsed, every default resolved.
//!
//! Nothing here is optional by accident: `Option` means "the operator may leave
//! this out and the feature is then off", never "not yet defaulted".

use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use tandem_core::{BackendAddress, ListenAddress, Protocol};

/// A whole, validated configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `None` when the `admin` section is absent: no admin endpoint.
    pub admin: Option<Admin>,
    pub runtime: Runtime,
    pub services: Vec<Service>,
    pub vrrp: Vrrp,
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

/// How the TCP byte pump moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// splice(2) through pooled pipes (the default on Linux).
    Splice,
    /// read/write through a userspace buffer.
    Copy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    RoundRobin,
    LeastConnections,
    SourceHash,
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKey {
    SourceIp,
    SourceIpPort,
}

/// What to do with a new connection when no backend is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAllDown {
    /// Close it at once and count it (default).
    Reject,
    /// Try every backend anyway, down ones included.
    TryAll,
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
    pub backends: Vec<BackendSpec>,
    pub health: Health,
    pub udp: Udp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    pub address: BackendAddress,
    pub name: Option<String>,
    /// 1..=256, default 1.
    pub weight: NonZeroU32,
    pub backup: bool,
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

/// An address with its prefix length, as in `198.18.0.100/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    pub address: IpAddr,
    pub prefix_len: u8,
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
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Track {
    pub services: Vec<String>,
    /// Priority change while a tracked service has no healthy backend (negative).
    pub weight: i32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
}
