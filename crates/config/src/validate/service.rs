//! Services and their backends, and the checks across services.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use tandem_core::{BackendAddress, ListenAddress, Protocol};

use super::*;

/// A backend's `proxy_protocol`: a version, or `none` to send no header.
const PROXY_WORDS: &[(&str, Option<ProxyVersion>)] = &[
    ("v1", Some(ProxyVersion::V1)),
    ("v2", Some(ProxyVersion::V2)),
    ("none", None),
];

/// What is known for sure about one service, for the checks across services.
struct Facts {
    at: FieldPath,
    name: Option<String>,
    listen: Option<(SocketAddr, Protocol)>,
}

pub(super) fn services(
    r: &mut Report,
    at: &FieldPath,
    raw: &[file::Service],
    defaults: &ServiceDefaults,
    admin_listen: Option<(SocketAddr, FieldPath)>,
) -> Vec<Service> {
    let mut out = Vec::with_capacity(raw.len());
    let mut facts = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let (service, f) = service(r, &at.item(i, s.name.as_deref()), s, defaults);
        out.push(service);
        facts.push(f);
    }

    let mut names: HashMap<&str, &FieldPath> = HashMap::new();
    let mut listens: HashMap<(SocketAddr, Protocol), &FieldPath> = HashMap::new();
    for f in &facts {
        if let Some(name) = &f.name {
            if let Some(first) = names.get(name.as_str()) {
                let line = r.line(&first.key("name"));
                let msg = format!("duplicate service name `{name}` (first defined at line {line})");
                r.value(&f.at.key("name"), msg);
            } else {
                names.insert(name, &f.at);
            }
        }
        if let Some((addr, protocol)) = f.listen {
            let listen_at = f.at.key("listen");
            if let Some((admin, admin_at)) = &admin_listen {
                if protocol == Protocol::Tcp && *admin == addr {
                    let line = r.line(admin_at);
                    let msg =
                        format!("`{addr}` (tcp) is already used by admin.listen (line {line})");
                    r.value(&listen_at, msg);
                }
            }
            if let Some(first) = listens.get(&(addr, protocol)) {
                let line = r.line(&first.key("listen"));
                let msg = format!(
                    "`{addr}` ({protocol}) is already used by {} (line {line})",
                    first.display()
                );
                r.value(&listen_at, msg);
            } else {
                listens.insert((addr, protocol), &f.at);
            }
        }
    }
    out
}

fn service(
    r: &mut Report,
    at: &FieldPath,
    raw: &file::Service,
    defaults: &ServiceDefaults,
) -> (Service, Facts) {
    let name = match &raw.name {
        Some(n) => values::name(r, &at.key("name"), n),
        None => {
            r.value(
                &at.key("name"),
                "missing; every service needs a unique name (letters, digits, `.`, `_` and `-`)",
            );
            None
        }
    };
    let protocol = match &raw.protocol {
        Some(p) => values::word(r, &at.key("protocol"), p, PROTOCOLS),
        None => Some(default::PROTOCOL),
    };
    let listen = match &raw.listen {
        Some(l) => values::socket_addr(r, &at.key("listen"), l),
        None => {
            r.value(
                &at.key("listen"),
                "missing; give the address to listen on (e.g. 198.18.0.100:8443)",
            );
            None
        }
    };
    let s = Settings::of_service(raw).resolve(r, at, defaults);
    let hash_key = match &raw.hash_key {
        Some(w) => {
            let at = at.key("hash_key");
            let v = values::word(r, &at, w, HashKey::NAMES);
            if s.scheduler != SchedulerKind::SourceHash {
                let name = s.scheduler.as_str();
                r.key(
                    &at,
                    format!("only used by `scheduler: source_hash` (this service uses `{name}`)"),
                );
            }
            v.unwrap_or(default::HASH_KEY)
        }
        None => default::HASH_KEY,
    };
    let on_all_down = raw
        .on_all_down
        .as_ref()
        .and_then(|w| values::word(r, &at.key("on_all_down"), w, OnAllDown::NAMES))
        .unwrap_or(default::ON_ALL_DOWN);
    let (admission, proxy_send) = admission::Written::of_service(raw).resolve(
        r,
        at,
        (&defaults.admission, defaults.proxy_send),
    );
    let backends = backends(
        r,
        &at.key("backends"),
        raw.backends.as_deref(),
        listen,
        proxy_send,
    );
    let health = match &raw.health {
        Some(h) => health(r, &at.key("health"), h),
        None => s.health.clone(),
    };
    if protocol == Some(Protocol::Udp) {
        udp_rules(r, at, raw, &health, &admission, &backends);
    }
    if raw.udp.is_some() && protocol == Some(Protocol::Tcp) {
        r.key(
            &at.key("udp"),
            "only applies to `protocol: udp` services (this one is tcp)",
        );
    }
    let udp = udp(r, &at.key("udp"), raw.udp.as_ref());
    if s.forwarding == Forwarding::Nat {
        nat_rules(r, at, raw, &s, listen, &health, &admission, &backends);
    } else if raw.nat_byte_counters.is_some() {
        r.value(
            &at.key("nat_byte_counters"),
            format!(
                "only for `forwarding: nat` (this service is `{}`, which counts bytes itself)",
                s.forwarding.as_str()
            ),
        );
    }

    let facts = Facts {
        at: at.clone(),
        name: name.clone(),
        listen: listen.zip(protocol),
    };
    let service = Service {
        name: name.unwrap_or_default(),
        protocol: protocol.unwrap_or(default::PROTOCOL),
        listen: ListenAddress(listen.unwrap_or(PLACEHOLDER_ADDR)),
        scheduler: s.scheduler,
        hash_key,
        on_all_down,
        connect_timeout: s.connect_timeout,
        connect_retries: s.connect_retries,
        idle_timeout: s.idle_timeout,
        drain_timeout: s.drain_timeout,
        forwarding: s.forwarding,
        max_connections: s.max_connections,
        tcp_keepalive: s.tcp_keepalive,
        access_log: s.access_log,
        nat_byte_counters: s.nat_byte_counters,
        backends,
        health,
        udp,
        admission,
    };
    (service, facts)
}

/// What a UDP service cannot have: an HTTP check (there is no connection to
/// send a request on), a PROXY header to accept, or a version 1 header.
fn udp_rules(
    r: &mut Report,
    at: &FieldPath,
    raw: &file::Service,
    health: &Health,
    admission: &Admission,
    backends: &[BackendSpec],
) {
    if matches!(health.kind, HealthKind::Http | HealthKind::Https) {
        let kind = health.kind.as_str();
        match &raw.health {
            Some(_) => r.value(
                &at.key("health").key("type"),
                format!("`{kind}` checks need TCP; a udp service takes `type: udp` or `none`"),
            ),
            None => r.value(
                &at.key("protocol"),
                format!("a udp service cannot use the `{kind}` check it inherits from `defaults.health`; give it `health: {{ type: udp }}` or `{{ type: none }}`"),
            ),
        }
    }
    if admission.proxy_accept.is_some() && raw.proxy_protocol.is_some() {
        r.value(
            &at.key("proxy_protocol").key("accept"),
            "only for tcp services: a PROXY header opens a connection",
        );
    }
    for (j, b) in backends.iter().enumerate() {
        if b.send_proxy == Some(ProxyVersion::V1) {
            let own = raw
                .backends
                .as_ref()
                .and_then(|l| l.get(j))
                .is_some_and(|b| b.proxy_protocol.is_some());
            let at = if own {
                at.key("backends").index(j).key("proxy_protocol")
            } else {
                at.key("proxy_protocol").key("send")
            };
            r.value(
                &at,
                "`v1` is text for TCP only; a udp service can send `v2`",
            );
            break;
        }
    }
}

/// What the kernel data path (`forwarding: nat`) cannot do: anything that
/// needs tandem to hold the connection (PROXY headers, admission, limits,
/// access logs, passive ejection, least connections) or to translate one
/// address family into the other. Settings that only steer the userspace
/// relay are refused where the service writes them, so that nobody expects
/// them to work; inherited from `defaults` they are ignored.
#[allow(clippy::too_many_arguments)]
fn nat_rules(
    r: &mut Report,
    at: &FieldPath,
    raw: &file::Service,
    s: &ServiceDefaults,
    listen: Option<SocketAddr>,
    health: &Health,
    admission: &Admission,
    backends: &[BackendSpec],
) {
    // Inherited settings are blamed on the service's `forwarding` (or, when
    // that is inherited too, on the service itself).
    let blame = |r: &mut Report, written: bool, key: &str, message: &str| {
        if written {
            r.value(&at.key(key), message);
        } else {
            let message = format!("{message} (`{key}` comes from `defaults`)");
            r.value(&at.key("forwarding"), message);
        }
    };
    if let Some(l) = listen.filter(|l| l.ip().is_unspecified()) {
        r.value(
            &at.key("listen"),
            format!("`{l}`: forwarding: nat translates one address; give the virtual or local IP, not an unspecified one"),
        );
    }
    if let Some(l) = listen {
        for (j, b) in backends.iter().enumerate() {
            let a = b.address.0;
            if a.is_ipv4() != l.is_ipv4() && !a.ip().is_unspecified() {
                r.value(
                    &at.key("backends").index(j).key("address"),
                    format!("`{a}`: forwarding: nat cannot translate between IPv4 and IPv6 (listen is `{l}`)"),
                );
            }
        }
    }
    if s.scheduler == SchedulerKind::LeastConnections {
        blame(
            r,
            raw.scheduler.is_some(),
            "scheduler",
            "`least_connections` needs connection counts the kernel does not keep; with forwarding: nat use `round_robin`, `random` or `source_hash`",
        );
    }
    if s.max_connections.is_some() {
        blame(
            r,
            raw.max_connections.is_some(),
            "max_connections",
            "forwarding: nat has no connection limit (the kernel forwards every flow)",
        );
    }
    if s.access_log {
        blame(
            r,
            raw.access_log.is_some(),
            "access_log",
            "forwarding: nat logs no connections (tandem never sees them)",
        );
    }
    let proxy_send = backends.iter().position(|b| b.send_proxy.is_some());
    if admission.proxy_accept.is_some() || proxy_send.is_some() {
        let own_backend = proxy_send.filter(|&j| {
            raw.backends
                .as_ref()
                .and_then(|l| l.get(j))
                .is_some_and(|b| b.proxy_protocol.is_some())
        });
        let message = "forwarding: nat cannot read or write PROXY headers (the kernel forwards packets, not streams)";
        match own_backend {
            Some(j) => r.value(&at.key("backends").index(j).key("proxy_protocol"), message),
            None => blame(r, raw.proxy_protocol.is_some(), "proxy_protocol", message),
        }
    }
    let admission_written = raw.allow.is_some() || raw.deny.is_some() || raw.limits.is_some();
    if !admission.allow.is_empty() || !admission.deny.is_empty() || !admission.limits.is_off() {
        let key = if raw.allow.is_some() || !admission_written && !admission.allow.is_empty() {
            "allow"
        } else if raw.deny.is_some() || !admission_written && !admission.deny.is_empty() {
            "deny"
        } else {
            "limits"
        };
        blame(
            r,
            admission_written,
            key,
            "forwarding: nat has no admission rules (`allow`, `deny`, `limits` run in tandem's accept path; filter with your own nftables rules)",
        );
    }
    if health.eject_after.is_some() {
        let written = raw.health.as_ref().is_some_and(|h| h.eject_after.is_some());
        let message = "forwarding: nat has no passive ejection (tandem makes no connects to watch); active health checks still apply";
        if written {
            r.value(&at.key("health").key("eject_after"), message);
        } else {
            blame(r, false, "health", message);
        }
    }
    let ignored = [
        (
            "idle_timeout",
            raw.idle_timeout.is_some(),
            "conntrack's timeouts apply",
        ),
        (
            "connect_timeout",
            raw.connect_timeout.is_some(),
            "tandem makes no connects",
        ),
        (
            "connect_retries",
            raw.connect_retries.is_some(),
            "tandem makes no connects",
        ),
        (
            "tcp_keepalive",
            raw.tcp_keepalive.is_some(),
            "the client's and the backend's own keepalive apply",
        ),
        ("udp", raw.udp.is_some(), "conntrack's UDP timeouts apply"),
    ];
    for (key, written, why) in ignored {
        if written {
            r.key(
                &at.key(key),
                format!("has no effect with forwarding: nat ({why}); remove it"),
            );
        }
    }
}

fn backends(
    r: &mut Report,
    at: &FieldPath,
    raw: Option<&[file::Backend]>,
    listen: Option<SocketAddr>,
    service_send: Option<ProxyVersion>,
) -> Vec<BackendSpec> {
    let Some(raw) = raw else {
        r.value(
            at,
            "missing; a service needs at least one backend (e.g. `- address: 198.18.0.11:6443`)",
        );
        return Vec::new();
    };
    if raw.is_empty() {
        r.value(at, "a service needs at least one backend");
        return Vec::new();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut all_parsed = true;
    let mut by_address: HashMap<SocketAddr, usize> = HashMap::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (j, b) in raw.iter().enumerate() {
        let bat = at.index(j);
        let address_at = bat.key("address");
        let address = match &b.address {
            Some(a) => values::socket_addr(r, &address_at, a),
            None => {
                r.value(&address_at, "missing (e.g. `address: 198.18.0.11:6443`)");
                None
            }
        };
        let address = address.filter(|a| {
            if a.ip().is_unspecified() {
                r.value(
                    &address_at,
                    format!("`{a}`: cannot connect to an unspecified address"),
                );
                false
            } else if Some(*a) == listen {
                r.value(
                    &address_at,
                    format!("`{a}` is this service's own listen address"),
                );
                false
            } else {
                true
            }
        });
        if let Some(a) = address {
            if let Some(first) = by_address.get(&a) {
                let line = r.line(&at.index(*first).key("address"));
                let msg = format!("`{a}` is listed twice (also backends[{first}], line {line})");
                r.value(&address_at, msg);
            } else {
                by_address.insert(a, j);
            }
        }
        let name = b
            .name
            .as_ref()
            .and_then(|n| values::name(r, &bat.key("name"), n));
        if let Some(n) = &name {
            if let Some(first) = by_name.get(n) {
                let line = r.line(&at.index(*first).key("name"));
                let msg =
                    format!("duplicate backend name `{n}` (also backends[{first}], line {line})");
                r.value(&bat.key("name"), msg);
            } else {
                by_name.insert(n.clone(), j);
            }
        }
        let weight = b
            .weight
            .and_then(|w| values::between::<u32>(r, &bat.key("weight"), w, 1, 256))
            .unwrap_or(default::WEIGHT);
        let send_proxy = match b.proxy_protocol.as_deref() {
            None => service_send,
            Some("none") => None,
            Some(w) => values::word(r, &bat.key("proxy_protocol"), w, PROXY_WORDS).flatten(),
        };
        all_parsed &= address.is_some();
        out.push(BackendSpec {
            send_proxy,
            address: BackendAddress(address.unwrap_or(PLACEHOLDER_ADDR)),
            name,
            weight: NonZeroU32::new(weight).unwrap_or(NonZeroU32::MIN),
            backup: b.backup.unwrap_or(default::BACKUP),
        });
    }
    if all_parsed && out.iter().all(|b| b.backup) {
        r.value(
            at,
            "every backend is a backup; at least one needs `backup: false`",
        );
    }
    out
}

fn udp(r: &mut Report, at: &FieldPath, raw: Option<&file::Udp>) -> Udp {
    let Some(raw) = raw else {
        return Udp {
            session_timeout: default::UDP_SESSION_TIMEOUT,
            max_sessions: None,
            replies_per_request: None,
        };
    };
    let session_timeout = raw
        .session_timeout
        .as_ref()
        .and_then(|d| values::positive_duration(r, &at.key("session_timeout"), d))
        .unwrap_or(default::UDP_SESSION_TIMEOUT);
    let mut count = |key: &str, v: Option<i64>| {
        v.and_then(|n| values::at_least::<u32>(r, &at.key(key), n, 1))
            .and_then(NonZeroU32::new)
    };
    Udp {
        session_timeout,
        max_sessions: count("max_sessions", raw.max_sessions),
        replies_per_request: count("replies_per_request", raw.replies_per_request),
    }
}
