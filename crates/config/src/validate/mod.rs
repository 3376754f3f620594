//! The raw file ([`crate::file`]) becomes the model ([`crate::model`]): every
//! rule checked, every default resolved.
//!
//! Defaults come from [`crate::defaults`] only. For service settings the order
//! is: the service's own value, else the file's `defaults` section, else the
//! constant. A service's `health` section replaces `defaults.health` as a whole
//! (no merging key by key: a check is read in one place).
//!
//! Every problem is reported, not just the first; a value found wrong is
//! replaced by its default (or a placeholder) so validation can go on, and
//! since any error makes the whole file invalid, those stand-ins never reach
//! a caller.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use tandem_core::Protocol;

use crate::defaults as default;
use crate::file;
use crate::locate::Document;
use crate::model::*;
use crate::path::FieldPath;
use crate::report::Report;
use crate::suggest;
use crate::values::{self, show};
use crate::ConfigError;

mod admission;
mod health;
mod routing;
mod service;
mod vrrp;

use health::{health, no_health};
use routing::routing;
use service::services;
use vrrp::vrrp;

const PROTOCOLS: &[(&str, Protocol)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
/// The word a table gives `value`: config names are written in one place.
fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(n, _)| n)
}

/// Stands in for an address that was missing or wrong (see the module doc).
const PLACEHOLDER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

pub(crate) fn validate(
    file: &file::File,
    doc: &Document,
    origin: &str,
) -> Result<Config, Vec<ConfigError>> {
    let mut r = Report::new(origin, doc);
    let root = FieldPath::root();

    let admin_at = root.key("admin");
    let admin = file.admin.as_ref().map(|a| admin(&mut r, &admin_at, a));
    let runtime = runtime(&mut r, &root.key("runtime"), file.runtime.as_ref());
    let defaults = service_defaults(&mut r, &root.key("defaults"), file.defaults.as_ref());
    let raw_services = file.services.as_deref().unwrap_or_default();
    let admin_listen = admin.as_ref().map(|a| (a.listen, admin_at.key("listen")));
    let services = services(
        &mut r,
        &root.key("services"),
        raw_services,
        &defaults,
        admin_listen,
    );
    let raw_vrrp = file.vrrp.as_ref();
    let vrrp = vrrp(&mut r, &root.key("vrrp"), raw_vrrp, &services);
    let routing = routing(
        &mut r,
        &root.key("routing"),
        file.routing.as_ref(),
        &services,
        &vrrp,
    );

    let has_instances = matches!(raw_vrrp.and_then(|v| v.instances.as_deref()), Some([_, ..]));
    if raw_services.is_empty() && !has_instances {
        r.value(
            &root.key("services"),
            "no services and no vrrp instances: there is nothing to run",
        );
    }

    let errors = r.finish();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        admin,
        runtime,
        services,
        vrrp,
        routing,
    })
}

fn admin(r: &mut Report, at: &FieldPath, raw: &file::Admin) -> Admin {
    let listen = raw
        .listen
        .as_ref()
        .and_then(|l| values::socket_addr(r, &at.key("listen"), l))
        .unwrap_or(default::ADMIN_LISTEN);
    let token_file = raw
        .token_file
        .as_ref()
        .and_then(|t| values::non_empty(r, &at.key("token_file"), t))
        .map(PathBuf::from);
    Admin { listen, token_file }
}

fn runtime(r: &mut Report, at: &FieldPath, raw: Option<&file::Runtime>) -> Runtime {
    let worker_threads = raw
        .and_then(|raw| raw.worker_threads)
        .and_then(|n| values::at_least::<usize>(r, &at.key("worker_threads"), n, 1))
        .and_then(NonZeroUsize::new);
    Runtime { worker_threads }
}

/// What a service inherits: the constants, overridden by the `defaults` section.
#[derive(Debug, Clone)]
struct ServiceDefaults {
    connect_timeout: Duration,
    connect_retries: u32,
    idle_timeout: Duration,
    drain_timeout: Duration,
    forwarding: Forwarding,
    scheduler: SchedulerKind,
    max_connections: Option<NonZeroU32>,
    tcp_keepalive: bool,
    access_log: bool,
    nat_byte_counters: bool,
    health: Health,
    admission: Admission,
    proxy_send: Option<ProxyVersion>,
}

fn service_defaults(
    r: &mut Report,
    at: &FieldPath,
    raw: Option<&file::Defaults>,
) -> ServiceDefaults {
    let d = ServiceDefaults {
        connect_timeout: default::CONNECT_TIMEOUT,
        connect_retries: default::CONNECT_RETRIES,
        idle_timeout: default::IDLE_TIMEOUT,
        drain_timeout: default::DRAIN_TIMEOUT,
        forwarding: default::FORWARDING,
        scheduler: default::SCHEDULER,
        max_connections: default::MAX_CONNECTIONS,
        tcp_keepalive: default::TCP_KEEPALIVE,
        access_log: default::ACCESS_LOG,
        nat_byte_counters: default::NAT_BYTE_COUNTERS,
        health: no_health(),
        admission: Admission::default(),
        proxy_send: None,
    };
    let Some(raw) = raw else {
        return d;
    };
    let s = Settings::of_defaults(raw).resolve(r, at, &d);
    let health = match &raw.health {
        Some(h) => health(r, &at.key("health"), h),
        None => d.health,
    };
    let (admission, proxy_send) =
        admission::Written::of_defaults(raw).resolve(r, at, (&d.admission, d.proxy_send));
    ServiceDefaults {
        health,
        admission,
        proxy_send,
        ..s
    }
}

/// The settings a service inherits and may override, as written.
struct Settings<'a> {
    connect_timeout: Option<&'a file::DurationText>,
    connect_retries: Option<i64>,
    idle_timeout: Option<&'a file::DurationText>,
    drain_timeout: Option<&'a file::DurationText>,
    forwarding: Option<&'a str>,
    scheduler: Option<&'a str>,
    max_connections: Option<i64>,
    tcp_keepalive: Option<bool>,
    access_log: Option<bool>,
    nat_byte_counters: Option<bool>,
}

/// `file::Defaults` and `file::Service` spell these fields alike; this reads
/// them from either, so the list is written once.
macro_rules! settings_of {
    ($raw:expr) => {{
        let raw = $raw;
        Settings {
            connect_timeout: raw.connect_timeout.as_ref(),
            connect_retries: raw.connect_retries,
            idle_timeout: raw.idle_timeout.as_ref(),
            drain_timeout: raw.drain_timeout.as_ref(),
            forwarding: raw.forwarding.as_deref(),
            scheduler: raw.scheduler.as_deref(),
            max_connections: raw.max_connections,
            tcp_keepalive: raw.tcp_keepalive,
            access_log: raw.access_log,
            nat_byte_counters: raw.nat_byte_counters,
        }
    }};
}

impl<'a> Settings<'a> {
    fn of_defaults(raw: &'a file::Defaults) -> Self {
        settings_of!(raw)
    }

    fn of_service(raw: &'a file::Service) -> Self {
        settings_of!(raw)
    }

    /// Checks what is written at `at` and takes what is not from `base`:
    /// the `defaults` section over the constants, a service over the
    /// resolved defaults.
    fn resolve(&self, r: &mut Report, at: &FieldPath, base: &ServiceDefaults) -> ServiceDefaults {
        let raw = self;
        let mut dur = |key: &str, v: Option<&file::DurationText>, base: Duration| {
            v.and_then(|d| values::positive_duration(r, &at.key(key), d))
                .unwrap_or(base)
        };
        let connect_timeout = dur("connect_timeout", raw.connect_timeout, base.connect_timeout);
        let idle_timeout = dur("idle_timeout", raw.idle_timeout, base.idle_timeout);
        let drain_timeout = dur("drain_timeout", raw.drain_timeout, base.drain_timeout);
        let connect_retries = raw
            .connect_retries
            .and_then(|n| values::at_least::<u32>(r, &at.key("connect_retries"), n, 0))
            .unwrap_or(base.connect_retries);
        let forwarding = raw
            .forwarding
            .and_then(|w| values::word(r, &at.key("forwarding"), w, Forwarding::NAMES))
            .unwrap_or(base.forwarding);
        let scheduler = raw
            .scheduler
            .and_then(|w| values::word(r, &at.key("scheduler"), w, SchedulerKind::NAMES))
            .unwrap_or(base.scheduler);
        let max_connections = match raw.max_connections {
            Some(n) => values::at_least::<u32>(r, &at.key("max_connections"), n, 1)
                .and_then(NonZeroU32::new),
            None => base.max_connections,
        };
        ServiceDefaults {
            connect_timeout,
            connect_retries,
            idle_timeout,
            drain_timeout,
            forwarding,
            scheduler,
            max_connections,
            tcp_keepalive: raw.tcp_keepalive.unwrap_or(base.tcp_keepalive),
            access_log: raw.access_log.unwrap_or(base.access_log),
            nat_byte_counters: raw.nat_byte_counters.unwrap_or(base.nat_byte_counters),
            health: base.health.clone(),
            admission: base.admission.clone(),
            proxy_send: base.proxy_send,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use tandem_core::{BackendAddress, ListenAddress};

    use super::*;
    use crate::parse;

    fn ok(text: &str) -> Config {
        parse(text, "t.yaml").unwrap_or_else(|e| panic!("must parse:\n{e}"))
    }

    /// The errors as `line:col: path: message` lines (origin left out).
    fn errors(text: &str) -> Vec<String> {
        match parse(text, "t.yaml") {
            Ok(_) => panic!("must not parse:\n{text}"),
            Err(e) => {
                e.0.iter()
                    .map(|e| e.to_string().replacen("t.yaml:", "", 1))
                    .collect()
            }
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const ONE: &str = "services:\n  - name: api\n    listen: 198.18.0.100:8443\n    backends:\n      - address: 198.18.0.11:6443\n";

    #[test]
    fn a_minimal_service_gets_every_default() {
        let c = ok(ONE);
        assert_eq!(c.admin, None);
        assert_eq!(
            c.runtime,
            Runtime {
                worker_threads: None
            }
        );
        assert_eq!(c.vrrp, Vrrp::default());
        let s = &c.services[0];
        let want = Service {
            name: "api".to_owned(),
            protocol: Protocol::Tcp,
            listen: ListenAddress(addr("198.18.0.100:8443")),
            scheduler: SchedulerKind::RoundRobin,
            hash_key: HashKey::SourceIp,
            on_all_down: OnAllDown::Reject,
            connect_timeout: Duration::from_secs(3),
            connect_retries: 2,
            idle_timeout: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(30),
            forwarding: Forwarding::Splice,
            max_connections: None,
            tcp_keepalive: true,
            access_log: false,
            nat_byte_counters: true,
            backends: vec![BackendSpec {
                address: BackendAddress(addr("198.18.0.11:6443")),
                name: None,
                weight: NonZeroU32::new(1).unwrap(),
                backup: false,
                send_proxy: None,
            }],
            health: no_health(),
            udp: Udp {
                session_timeout: Duration::from_secs(30),
                max_sessions: None,
                replies_per_request: None,
            },
            admission: Admission::default(),
        };
        assert_eq!(*s, want);
        assert_eq!(s.health.kind, HealthKind::None);
        assert_eq!(s.health.initial, InitialState::Up);
        assert_eq!(s.health.interval, Duration::from_secs(2));
        assert_eq!(s.health.timeout, Duration::from_secs(1));
        assert_eq!((s.health.rise.get(), s.health.fall.get()), (2, 3));
        assert_eq!(s.health.path, "/");
        assert_eq!(s.health.expect_status, vec![200]);
        assert!(s.health.tls.verify);
    }

    #[test]
    fn services_override_defaults_field_by_field() {
        let c = ok("\
defaults:
  connect_timeout: 5s
  connect_retries: 4
  idle_timeout: 2h
  drain_timeout: 1m
  forwarding: copy
  scheduler: random
  max_connections: 100
  tcp_keepalive: false
  access_log: true
services:
  - name: inherits
    listen: 198.18.0.100:1
    backends: [{ address: 198.18.0.11:1 }]
  - name: overrides
    listen: 198.18.0.100:2
    connect_timeout: 250ms
    scheduler: least_connections
    access_log: false
    backends: [{ address: 198.18.0.11:1 }]
");
        let (a, b) = (&c.services[0], &c.services[1]);
        assert_eq!(a.connect_timeout, Duration::from_secs(5));
        assert_eq!(a.connect_retries, 4);
        assert_eq!(a.idle_timeout, Duration::from_secs(7200));
        assert_eq!(a.drain_timeout, Duration::from_secs(60));
        assert_eq!(a.forwarding, Forwarding::Copy);
        assert_eq!(a.scheduler, SchedulerKind::Random);
        assert_eq!(a.max_connections, NonZeroU32::new(100));
        assert!(!a.tcp_keepalive);
        assert!(a.access_log);

        assert_eq!(b.connect_timeout, Duration::from_millis(250));
        assert_eq!(b.scheduler, SchedulerKind::LeastConnections);
        assert!(!b.access_log);
        // Everything it does not set still comes from `defaults`.
        assert_eq!(b.connect_retries, 4);
        assert_eq!(b.forwarding, Forwarding::Copy);
        assert_eq!(b.max_connections, NonZeroU32::new(100));
    }

    #[test]
    fn a_service_health_section_replaces_the_default_one_whole() {
        let c = ok("\
defaults:
  health: { type: tcp, interval: 5s, timeout: 2s, rise: 4, eject_after: 3 }
services:
  - name: inherits
    listen: 198.18.0.100:1
    backends: [{ address: 198.18.0.11:1 }]
  - name: replaces
    listen: 198.18.0.100:2
    backends: [{ address: 198.18.0.11:1 }]
    health: { type: http, path: /healthz }
");
        let (a, b) = (&c.services[0].health, &c.services[1].health);
        assert_eq!(a.kind, HealthKind::Tcp);
        assert_eq!(a.interval, Duration::from_secs(5));
        assert_eq!(a.rise.get(), 4);
        assert_eq!(a.eject_after, NonZeroU32::new(3));
        assert_eq!(a.initial, InitialState::Down);

        assert_eq!(b.kind, HealthKind::Http);
        assert_eq!(b.path, "/healthz");
        assert_eq!(
            b.interval,
            Duration::from_secs(2),
            "no merge with defaults.health"
        );
        assert_eq!(b.rise.get(), 2);
        assert_eq!(b.eject_after, None);
    }

    #[test]
    fn initial_state_defaults_by_check_type_and_can_be_set() {
        for (kind, want) in [
            ("none", InitialState::Up),
            ("tcp", InitialState::Down),
            ("http", InitialState::Down),
            ("https", InitialState::Down),
            ("udp", InitialState::Down),
        ] {
            let c = ok(&format!("{ONE}    health: {{ type: {kind} }}\n"));
            assert_eq!(c.services[0].health.initial, want, "{kind}");
        }
        let c = ok(&format!("{ONE}    health: {{ type: tcp, initial: up }}\n"));
        assert_eq!(c.services[0].health.initial, InitialState::Up);
    }

    #[test]
    fn an_empty_admin_section_enables_it_with_defaults() {
        let c = ok(&format!("admin:\n{ONE}"));
        assert_eq!(
            c.admin,
            Some(Admin {
                listen: addr("127.0.0.1:9901"),
                token_file: None
            })
        );
        let c = ok(&format!(
            "admin: {{ listen: \"[::1]:9000\", token_file: /t }}\n{ONE}"
        ));
        let admin = c.admin.unwrap();
        assert_eq!(admin.listen, addr("[::1]:9000"));
        assert_eq!(admin.token_file, Some(PathBuf::from("/t")));
    }

    #[test]
    fn vrrp_instances_get_their_defaults() {
        let c = ok("vrrp:\n  instances:\n    - { name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [198.18.0.100] }\n");
        let i = &c.vrrp.instances[0];
        assert_eq!(i.priority, 100);
        assert_eq!(i.advert_interval, Duration::from_secs(1));
        assert!(i.preempt);
        assert_eq!(i.preempt_delay, Duration::ZERO);
        assert_eq!(
            i.virtual_ips,
            vec![IpPrefix {
                address: "198.18.0.100".parse().unwrap(),
                prefix_len: 32
            }]
        );
        assert_eq!(i.track, Track::default());
        assert_eq!(i.notify, Notify::default());
        assert!(i.unicast_peers.is_empty());
        assert_eq!(
            i.garp,
            Garp {
                repeat: 5,
                interval: Duration::from_secs(1),
                refresh: Duration::from_secs(60)
            }
        );
        assert_eq!(i.checksum, VrrpChecksum::PseudoHeader);
        // One Master_Down_Interval: 3 × 1s + (256 − 100) × 1s / 256.
        assert_eq!(i.startup_delay, Duration::from_micros(3_609_375));
    }

    #[test]
    fn vrrp_hygiene_keys_are_read() {
        let c = ok("\
services:
  - { name: api, listen: 198.18.0.100:8443, backends: [{ address: 198.18.0.11:6443 }] }
vrrp:
  instances:
    - name: v
      interface: eth0
      virtual_router_id: 1
      priority: 200
      advert_interval: 100ms
      virtual_ips: [198.18.0.100]
      startup_delay: 0s
      checksum: no_pseudo_header
      garp: { repeat: 2, interval: 0s, refresh: 0s }
      track: { services: [api], weight: -60, peer_priorities: [150, 100] }
    - name: w
      interface: eth0
      virtual_router_id: 2
      priority: 200
      advert_interval: 100ms
      virtual_ips: [198.18.0.101]
      garp: { repeat: 1 }
");
        let (v, w) = (&c.vrrp.instances[0], &c.vrrp.instances[1]);
        assert_eq!(v.startup_delay, Duration::ZERO);
        assert_eq!(v.checksum, VrrpChecksum::NoPseudoHeader);
        assert_eq!(
            v.garp,
            Garp {
                repeat: 2,
                interval: Duration::ZERO,
                refresh: Duration::ZERO
            }
        );
        assert_eq!(v.track.peer_priorities, vec![150, 100]);
        // The default hold-off follows the instance's own timers:
        // 3 × 100ms + (256 − 200) × 100ms / 256.
        assert_eq!(w.startup_delay, Duration::from_micros(321_875));
        assert_eq!(w.garp.repeat, 1);
        assert_eq!(
            w.garp.interval,
            Duration::from_secs(1),
            "unset keys keep their default"
        );
    }

    #[test]
    fn the_ipv4_checksum_setting_is_refused_on_ipv6() {
        let e = errors(
            "vrrp:\n  instances:\n    - { name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [\"2001:db8::1\"], checksum: no_pseudo_header }\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("applies to IPv4 only"), "{e:?}");
    }

    #[test]
    fn ipv6_addresses_work_everywhere() {
        let c = ok("\
services:
  - name: v6
    listen: \"[2001:db8::100]:8443\"
    backends: [{ address: \"[2001:db8::11]:6443\" }]
vrrp:
  instances:
    - name: v
      interface: eth0
      virtual_router_id: 1
      virtual_ips: [\"2001:db8::100\"]
      unicast_peers: [\"fe80::2\"]
");
        let want: Ipv6Addr = "2001:db8::100".parse().unwrap();
        assert_eq!(c.services[0].listen.0.ip(), IpAddr::V6(want));
        assert_eq!(c.vrrp.instances[0].virtual_ips[0].prefix_len, 128);
    }

    #[test]
    fn one_vrid_may_serve_both_families_on_one_interface() {
        let c = ok("\
vrrp:
  instances:
    - { name: a, interface: eth0, virtual_router_id: 9, virtual_ips: [198.18.0.100] }
    - { name: b, interface: eth0, virtual_router_id: 9, virtual_ips: [\"2001:db8::100\"] }
");
        assert_eq!(c.vrrp.instances.len(), 2);
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let e = errors(
            "\
services:
  - name: a
    listen: 198.18.0.100:0
    backends: [{ address: x, weight: 0 }]
    connect_timeout: 0s
",
        );
        assert_eq!(
            e,
            vec![
                "3:13: services[a].listen: `198.18.0.100:0`: port must be between 1 and 65535",
                "4:27: services[a].backends[0].address: `x` is not an address:port (e.g. 198.18.0.100:8443 or [2001:db8::1]:8443)",
                "4:38: services[a].backends[0].weight: must be between 1 and 256, got 0",
                "5:22: services[a].connect_timeout: must be longer than 0, got `0s`",
            ]
        );
    }

    #[test]
    fn items_without_a_valid_name_are_named_by_index() {
        let e = errors("services:\n  - listen: 198.18.0.100:1\n    backends: [{ address: 198.18.0.11:1, weight: 0 }]\n");
        assert!(
            e.iter()
                .any(|l| l.contains("services[0].backends[0].weight")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|l| l.contains("services[0].name: missing")),
            "{e:?}"
        );
    }

    #[test]
    fn an_interval_below_the_default_timeout_says_to_set_the_timeout() {
        let e = errors(&format!(
            "{ONE}    health: {{ type: tcp, interval: 500ms }}\n"
        ));
        assert_eq!(
            e,
            vec!["6:36: services[api].health.interval: must not be shorter than the timeout (1s by default), got 500ms; set `timeout` too"]
        );
    }

    #[test]
    fn a_probe_on_a_udp_service_and_udp_settings_are_accepted() {
        let c = ok("\
services:
  - name: dns
    protocol: udp
    listen: 198.18.0.100:53
    backends: [{ address: 198.18.0.21:53 }]
    health: { type: udp, send: \"\", expect: pong }
    udp: { session_timeout: 5s, max_sessions: 10, replies_per_request: 1 }
");
        let s = &c.services[0];
        assert_eq!(s.protocol, Protocol::Udp);
        assert_eq!(s.health.send.as_deref(), Some(""));
        assert_eq!(s.udp.session_timeout, Duration::from_secs(5));
        assert_eq!(s.udp.max_sessions, NonZeroU32::new(10));
        assert_eq!(s.udp.replies_per_request, NonZeroU32::new(1));
    }

    #[test]
    fn advert_intervals_are_whole_centiseconds_within_twelve_bits() {
        let inst = |v: &str| {
            format!("vrrp:\n  instances:\n    - {{ name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [198.18.0.100], advert_interval: {v} }}\n")
        };
        assert_eq!(
            ok(&inst("10ms")).vrrp.instances[0].advert_interval,
            Duration::from_millis(10)
        );
        assert_eq!(
            ok(&inst("40950ms")).vrrp.instances[0].advert_interval,
            Duration::from_millis(40950)
        );
        for bad in ["5ms", "40960ms", "1s 5ms", "0s"] {
            assert_eq!(errors(&inst(bad)).len(), 1, "{bad}");
        }
    }

    #[test]
    fn track_weight_is_required_and_bounded() {
        let inst = |track: &str| {
            format!("{ONE}vrrp:\n  instances:\n    - {{ name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [198.18.0.100], track: {track} }}\n")
        };
        let c = ok(&inst("{ services: [api], weight: -254 }"));
        assert_eq!(
            c.vrrp.instances[0].track,
            Track {
                services: vec!["api".to_owned()],
                weight: -254,
                peer_priorities: Vec::new(),
            }
        );
        for bad in [
            "{ services: [api] }",
            "{ services: [api], weight: -255 }",
            "{ services: [api, api], weight: -1 }",
            "{ services: [api], weight: -1, peer_priorities: [0] }",
        ] {
            assert_eq!(errors(&inst(bad)).len(), 1, "{bad}");
        }
    }
}
