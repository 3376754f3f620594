//! Every default, in one place.
//!
//! A value the operator leaves out is taken from here (for service settings:
//! from the file's `defaults` section first, then from here). The validator
//! reads these constants and nothing else invents a value; docs/configuration.md
//! lists the same numbers and must change with them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tandem_core::Protocol;

use crate::model::{
    Forwarding, HashKey, HealthKind, InitialState, OnAllDown, SchedulerKind, VrrpChecksum,
};

// admin
pub(crate) const ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9901);

// services (the first group can also be set under `defaults`)
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const CONNECT_RETRIES: u32 = 2;
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const FORWARDING: Forwarding = Forwarding::Splice;
pub(crate) const SCHEDULER: SchedulerKind = SchedulerKind::RoundRobin;
/// `None`: no limit.
pub(crate) const MAX_CONNECTIONS: Option<std::num::NonZeroU32> = None;
pub(crate) const TCP_KEEPALIVE: bool = true;
pub(crate) const ACCESS_LOG: bool = false;
pub(crate) const NAT_BYTE_COUNTERS: bool = true;

pub(crate) const PROTOCOL: Protocol = Protocol::Tcp;
pub(crate) const HASH_KEY: HashKey = HashKey::SourceIp;
pub(crate) const ON_ALL_DOWN: OnAllDown = OnAllDown::Reject;
/// How long a PROXY header may take to arrive (HAProxy's `timeout client` is the usual bound).
pub(crate) const PROXY_TIMEOUT: Duration = Duration::from_secs(3);

// backends
pub(crate) const WEIGHT: u32 = 1;
pub(crate) const BACKUP: bool = false;

// health (a service without a `health` section, and no `defaults.health`, is `none`)
pub(crate) const HEALTH_KIND: HealthKind = HealthKind::None;
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const HEALTH_RISE: u32 = 2;
pub(crate) const HEALTH_FALL: u32 = 3;
pub(crate) const HTTP_PATH: &str = "/";
pub(crate) const EXPECT_STATUS: u16 = 200;
pub(crate) const TLS_VERIFY: bool = true;

/// A probed backend starts down until its first `rise`; without probes it is up.
pub(crate) fn initial_state(kind: HealthKind) -> InitialState {
    match kind {
        HealthKind::None => InitialState::Up,
        HealthKind::Tcp | HealthKind::Http | HealthKind::Https | HealthKind::Udp => {
            InitialState::Down
        }
    }
}

// udp services
pub(crate) const UDP_SESSION_TIMEOUT: Duration = Duration::from_secs(30);

// vrrp instances
pub(crate) const VRRP_PRIORITY: u8 = crate::model::DEFAULT_VRRP_PRIORITY;
pub(crate) const ADVERT_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const PREEMPT: bool = true;
pub(crate) const PREEMPT_DELAY: Duration = Duration::ZERO;
pub(crate) const GARP_REPEAT: u32 = 5;
pub(crate) const GARP_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const GARP_REFRESH: Duration = Duration::from_secs(60);
/// keepalived's default, so a mixed group works without settings.
pub(crate) const VRRP_CHECKSUM: VrrpChecksum = VrrpChecksum::PseudoHeader;

/// `startup_delay` by default: one Master_Down_Interval of the instance
/// (RFC 9568 §6.1: 3 × Advertisement_Interval + Skew_Time, with
/// Skew_Time = ((256 − priority) × Advertisement_Interval) / 256), so a node
/// that starts listens for two of them before it may become master.
pub(crate) fn startup_delay(priority: u8, advert_interval: Duration) -> Duration {
    crate::model::master_down_interval(priority, advert_interval)
}

// The routing section (docs/bgp.md). Table 250 and protocol 250 are free on
// a stock system: tables 253–255 are the kernel's, protocols up to 4 are the
// kernel's and 11–18, 42 and 186–192 are routing daemons' (rt_protos).
pub(crate) const ROUTING_TABLE: u32 = 250;
pub(crate) const ROUTING_PROTOCOL: u8 = 250;
pub(crate) const ROUTING_DEVICE: &str = "tandem-routes";
pub(crate) const ROUTING_VIP_INTERFACE: &str = "lo";
pub(crate) const ROUTING_WITHDRAW_DELAY: Duration = Duration::from_secs(2);
