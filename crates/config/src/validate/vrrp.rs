//! VRRP instances, and the checks across instances.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::*;

/// VRRP sends the advertisement interval in centiseconds, in 12 bits.
const MIN_ADVERT: Duration = Duration::from_millis(10);
const MAX_ADVERT: Duration = Duration::from_millis(40_950);
const MAX_GARP_REPEAT: i64 = 100;
const CHECKSUMS: &[(&str, VrrpChecksum)] = &[
    ("pseudo_header", VrrpChecksum::PseudoHeader),
    ("no_pseudo_header", VrrpChecksum::NoPseudoHeader),
];

impl VrrpChecksum {
    /// The name the configuration file uses.
    pub fn as_str(self) -> &'static str {
        super::name_of(CHECKSUMS, self)
    }

    /// The other way to compute an IPv4 advert's checksum.
    pub fn other(self) -> VrrpChecksum {
        match self {
            VrrpChecksum::PseudoHeader => VrrpChecksum::NoPseudoHeader,
            VrrpChecksum::NoPseudoHeader => VrrpChecksum::PseudoHeader,
        }
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// What the checks across instances need to know about one instance.
struct InstanceFacts {
    at: FieldPath,
    name: Option<String>,
    interface: Option<String>,
    vrid: Option<u8>,
    /// The family of the first valid virtual IP.
    family: Option<&'static str>,
    vips: Vec<(usize, IpAddr)>,
}

pub(super) fn vrrp(
    r: &mut Report,
    at: &FieldPath,
    raw: Option<&file::Vrrp>,
    services: &[Service],
) -> Vrrp {
    let raw = raw.and_then(|v| v.instances.as_deref()).unwrap_or_default();
    let at = at.key("instances");
    let service_names: Vec<&str> = services
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let mut instances = Vec::with_capacity(raw.len());
    let mut facts = Vec::with_capacity(raw.len());
    for (i, inst) in raw.iter().enumerate() {
        let (m, f) = instance(r, &at.item(i, inst.name.as_deref()), inst, &service_names);
        instances.push(m);
        facts.push(f);
    }

    let mut names: HashMap<&str, &FieldPath> = HashMap::new();
    let mut vrids: HashMap<(&str, &str, u8), &FieldPath> = HashMap::new();
    let mut vips: HashMap<IpAddr, (&FieldPath, FieldPath)> = HashMap::new();
    for f in &facts {
        if let Some(name) = &f.name {
            if let Some(first) = names.get(name.as_str()) {
                let line = r.line(&first.key("name"));
                let msg =
                    format!("duplicate instance name `{name}` (first defined at line {line})");
                r.value(&f.at.key("name"), msg);
            } else {
                names.insert(name, &f.at);
            }
        }
        if let (Some(ifname), Some(vrid), Some(fam)) = (&f.interface, f.vrid, f.family) {
            if let Some(first) = vrids.get(&(ifname.as_str(), fam, vrid)) {
                let line = r.line(&first.key("virtual_router_id"));
                let msg = format!(
                    "virtual router id {vrid} is already used for {fam} on `{ifname}` by {} (line {line})",
                    first.display()
                );
                r.value(&f.at.key("virtual_router_id"), msg);
            } else {
                vrids.insert((ifname, fam, vrid), &f.at);
            }
        }
        for (j, ip) in &f.vips {
            let vip_at = f.at.key("virtual_ips").index(*j);
            if let Some((first, first_vip)) = vips.get(ip) {
                let line = r.line(first_vip);
                let msg = format!(
                    "`{ip}` is already a virtual IP of {} (line {line})",
                    first.display()
                );
                r.value(&vip_at, msg);
            } else {
                vips.insert(*ip, (&f.at, vip_at));
            }
        }
    }
    Vrrp { instances }
}

fn instance(
    r: &mut Report,
    at: &FieldPath,
    raw: &file::Instance,
    service_names: &[&str],
) -> (VrrpInstance, InstanceFacts) {
    let name = match &raw.name {
        Some(n) => values::name(r, &at.key("name"), n),
        None => {
            r.value(
                &at.key("name"),
                "missing; every instance needs a unique name",
            );
            None
        }
    };
    let interface = match &raw.interface {
        Some(i) => interface(r, &at.key("interface"), i),
        None => {
            r.value(
                &at.key("interface"),
                "missing; name the network interface for the adverts (e.g. eth0)",
            );
            None
        }
    };
    let vrid = match raw.virtual_router_id {
        Some(v) => values::between::<u8>(r, &at.key("virtual_router_id"), v, 1, 255),
        None => {
            r.value(
                &at.key("virtual_router_id"),
                "missing; a number from 1 to 255, the same on every node of this instance",
            );
            None
        }
    };
    let priority = raw
        .priority
        .and_then(|p| values::between::<u8>(r, &at.key("priority"), p, 1, 255))
        .unwrap_or(default::VRRP_PRIORITY);
    let advert_interval = raw
        .advert_interval
        .as_ref()
        .and_then(|d| {
            let at = at.key("advert_interval");
            let v = values::duration(r, &at, d)?;
            if !(MIN_ADVERT..=MAX_ADVERT).contains(&v) {
                r.value(
                    &at,
                    format!("must be between 10ms and 40950ms, got `{}`", d.text),
                );
                None
            } else if v.as_nanos() % MIN_ADVERT.as_nanos() != 0 {
                let msg = format!(
                    "must be a multiple of 10ms (VRRP counts in centiseconds), got `{}`",
                    d.text
                );
                r.value(&at, msg);
                None
            } else {
                Some(v)
            }
        })
        .unwrap_or(default::ADVERT_INTERVAL);
    let preempt = raw.preempt.unwrap_or(default::PREEMPT);
    let preempt_delay = raw
        .preempt_delay
        .as_ref()
        .and_then(|d| values::duration(r, &at.key("preempt_delay"), d))
        .unwrap_or(default::PREEMPT_DELAY);
    if !preempt && raw.preempt_delay.is_some() {
        r.key(
            &at.key("preempt_delay"),
            "has no effect with `preempt: false`",
        );
    }

    let (virtual_ips, vip_family) =
        virtual_ips(r, &at.key("virtual_ips"), raw.virtual_ips.as_deref());
    let unicast_peers = unicast_peers(
        r,
        &at.key("unicast_peers"),
        raw.unicast_peers.as_deref().unwrap_or_default(),
        vip_family,
    );
    let track = match &raw.track {
        Some(t) => track(r, &at.key("track"), t, service_names),
        None => Track::default(),
    };
    let notify = match &raw.notify {
        Some(n) => {
            let at = at.key("notify");
            let mut cmd = |key: &str, v: &Option<String>| {
                let text = v
                    .as_ref()
                    .and_then(|s| values::non_empty(r, &at.key(key), s))?;
                match split_command(&text) {
                    Ok(_) => Some(text),
                    Err(why) => {
                        r.value(&at.key(key), format!("`{text}`: {why}"));
                        None
                    }
                }
            };
            Notify {
                master: cmd("master", &n.master),
                backup: cmd("backup", &n.backup),
                fault: cmd("fault", &n.fault),
            }
        }
        None => Notify::default(),
    };

    let startup_delay = raw
        .startup_delay
        .as_ref()
        .and_then(|d| values::duration(r, &at.key("startup_delay"), d))
        .unwrap_or_else(|| default::startup_delay(priority, advert_interval));
    let garp = match &raw.garp {
        Some(g) => garp(r, &at.key("garp"), g),
        None => Garp {
            repeat: default::GARP_REPEAT,
            interval: default::GARP_INTERVAL,
            refresh: default::GARP_REFRESH,
        },
    };
    let checksum = raw
        .checksum
        .as_deref()
        .and_then(|w| values::word(r, &at.key("checksum"), w, CHECKSUMS))
        .unwrap_or(default::VRRP_CHECKSUM);
    if checksum == VrrpChecksum::NoPseudoHeader && vip_family.is_some_and(|f| f.is_ipv6()) {
        r.value(
            &at.key("checksum"),
            "`no_pseudo_header` applies to IPv4 only; IPv6 adverts always include the pseudo-header",
        );
    }

    let facts = InstanceFacts {
        at: at.clone(),
        name: name.clone(),
        interface: interface.clone(),
        vrid,
        family: vip_family.map(family),
        vips: virtual_ips.iter().map(|(j, p)| (*j, p.address)).collect(),
    };
    let instance = VrrpInstance {
        name: name.unwrap_or_default(),
        interface: interface.unwrap_or_default(),
        virtual_router_id: vrid.unwrap_or(1),
        priority,
        advert_interval,
        preempt,
        preempt_delay,
        virtual_ips: virtual_ips.into_iter().map(|(_, p)| p).collect(),
        track,
        notify,
        unicast_peers,
        startup_delay,
        garp,
        checksum,
    };
    (instance, facts)
}

/// Linux interface names: 1 to 15 bytes, no `/`, no white space.
pub(super) fn interface(r: &mut Report, at: &FieldPath, text: &str) -> Option<String> {
    let ok = !text.is_empty()
        && text.len() <= 15
        && text != "."
        && text != ".."
        && !text.chars().any(|c| c == '/' || c.is_whitespace());
    if ok {
        Some(text.to_owned())
    } else {
        r.value(
            at,
            format!(
                "`{text}` is not a network interface name (1 to 15 characters, no `/` or spaces)"
            ),
        );
        None
    }
}

/// The instance's valid addresses with their index in the file, and the
/// family of the first one (the family of the instance).
fn virtual_ips(
    r: &mut Report,
    at: &FieldPath,
    raw: Option<&[String]>,
) -> (Vec<(usize, IpPrefix)>, Option<IpAddr>) {
    let Some(raw) = raw else {
        r.value(
            at,
            "missing; an instance needs at least one virtual IP (e.g. [198.18.0.100/24])",
        );
        return (Vec::new(), None);
    };
    if raw.is_empty() {
        r.value(at, "an instance needs at least one virtual IP");
        return (Vec::new(), None);
    }
    let mut out: Vec<(usize, IpPrefix)> = Vec::with_capacity(raw.len());
    for (j, text) in raw.iter().enumerate() {
        let item = at.index(j);
        let Some(p) = values::ip_prefix(r, &item, text) else {
            continue;
        };
        let ip = p.address;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            r.value(&item, format!("`{text}` cannot be a virtual IP"));
            continue;
        }
        if let Some((k, first)) = out.first() {
            if first.address.is_ipv4() != ip.is_ipv4() {
                let msg = format!(
                    "`{text}` is {} but virtual_ips[{k}] is {}; use one instance per address family",
                    family(ip),
                    family(first.address)
                );
                r.value(&item, msg);
                continue;
            }
        }
        if let Some((k, _)) = out.iter().find(|(_, q)| q.address == ip) {
            r.value(
                &item,
                format!("`{ip}` is listed twice (also virtual_ips[{k}])"),
            );
            continue;
        }
        out.push((j, p));
    }
    let fam = out.first().map(|(_, p)| p.address);
    (out, fam)
}

fn unicast_peers(
    r: &mut Report,
    at: &FieldPath,
    raw: &[String],
    vip: Option<IpAddr>,
) -> Vec<IpAddr> {
    let mut out: Vec<(usize, IpAddr)> = Vec::with_capacity(raw.len());
    for (j, text) in raw.iter().enumerate() {
        let item = at.index(j);
        let Some(ip) = values::ip_addr(r, &item, text) else {
            continue;
        };
        if ip.is_unspecified() || ip.is_multicast() {
            r.value(&item, format!("`{ip}` cannot be a unicast peer"));
            continue;
        }
        if let Some(v) = vip.filter(|v| v.is_ipv4() != ip.is_ipv4()) {
            let msg = format!(
                "`{ip}` is {} but the virtual IPs are {}",
                family(ip),
                family(v)
            );
            r.value(&item, msg);
            continue;
        }
        if let Some((k, _)) = out.iter().find(|(_, q)| *q == ip) {
            r.value(
                &item,
                format!("`{ip}` is listed twice (also unicast_peers[{k}])"),
            );
            continue;
        }
        out.push((j, ip));
    }
    out.into_iter().map(|(_, ip)| ip).collect()
}

fn track(r: &mut Report, at: &FieldPath, raw: &file::Track, service_names: &[&str]) -> Track {
    let services_at = at.key("services");
    let mut services = Vec::new();
    match raw.services.as_deref() {
        None => r.value(
            &services_at,
            "missing; list the services whose health moves this instance's priority",
        ),
        Some([]) => r.value(&services_at, "must list at least one service"),
        Some(list) => {
            for (j, name) in list.iter().enumerate() {
                let item = services_at.index(j);
                if service_names.contains(&name.as_str()) {
                    if services.contains(name) {
                        r.value(&item, format!("`{name}` is listed twice"));
                    } else {
                        services.push(name.clone());
                    }
                } else if service_names.is_empty() {
                    r.value(
                        &item,
                        format!("unknown service `{name}`: the file defines no services"),
                    );
                } else {
                    r.value(&item, suggest::unknown("service", name, service_names));
                }
            }
        }
    }
    let weight_at = at.key("weight");
    let weight = match raw.weight {
        None => {
            r.value(
                &weight_at,
                "missing; the priority change while a tracked service is down (e.g. -60)",
            );
            0
        }
        Some(0) => {
            r.value(&weight_at, "must not be 0: tracking would change nothing");
            0
        }
        Some(w) => values::between::<i32>(r, &weight_at, w, -254, 254).unwrap_or(0),
    };
    let peers_at = at.key("peer_priorities");
    let peer_priorities = raw
        .peer_priorities
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(j, p)| values::between::<u8>(r, &peers_at.index(j), *p, 1, 255))
        .collect();
    Track {
        services,
        weight,
        peer_priorities,
    }
}

fn garp(r: &mut Report, at: &FieldPath, raw: &file::Garp) -> Garp {
    let repeat = raw
        .repeat
        .and_then(|n| values::between::<u32>(r, &at.key("repeat"), n, 1, MAX_GARP_REPEAT))
        .unwrap_or(default::GARP_REPEAT);
    let mut dur = |key: &str, v: &Option<file::DurationText>, base: Duration| {
        v.as_ref()
            .and_then(|d| values::duration(r, &at.key(key), d))
            .unwrap_or(base)
    };
    let interval = dur("interval", &raw.interval, default::GARP_INTERVAL);
    let refresh = dur("refresh", &raw.refresh, default::GARP_REFRESH);
    Garp {
        repeat,
        interval,
        refresh,
    }
}
