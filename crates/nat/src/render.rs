//! The whole tandem-owned table as one `nft -f` transaction.
//!
//! Layout (see docs/architecture.md for why each hook):
//! - `prerouting` and `output` (nat, dstnat priority) jump to `services`, whose
//!   verdict maps send `address . protocol . port` to a `service_N` chain: so
//!   forwarded clients and clients on the node itself are both translated;
//! - `service_N` picks `<pick> mod SLOTS vmap { slot : jump sI_bJ }`, or
//!   refuses (TCP reset, ICMP port unreachable) while no backend may be
//!   picked; each backend's chain `sI_bJ` counts the new flow in its named
//!   counter `sI_bJ_new` and DNATs (a nat chain sees only a flow's first
//!   packet, so counting flows there costs the later packets nothing);
//! - `postrouting` (srcnat) masquerades the flows it DNATed, so replies come
//!   back through the node (except on loopback, where they do anyway);
//! - `count_prerouting` / `count_output` (filter) count the bytes of each
//!   direction per backend (`sI_bJ_orig`, `sI_bJ_reply`); they see every
//!   packet of the host, so an untranslated packet leaves after one test of
//!   its conntrack status (`nft list counters table inet tandem`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tandem_core::{HashKey, OnAllDown, Protocol, SchedulerKind};

use crate::slots;

/// The table tandem owns: `family name` as nft spells it.
pub const TABLE: &str = "inet tandem";

/// One `forwarding: nat` service as the renderer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub scheduler: SchedulerKind,
    pub hash_key: HashKey,
    pub on_all_down: OnAllDown,
    /// Count each flow's bytes (`nat_byte_counters`): a rule on every packet.
    pub byte_counters: bool,
    pub backends: Vec<Backend>,
}

/// One backend and whether new flows may go to it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub address: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    /// Up and not draining.
    pub available: bool,
}

impl Service {
    /// The service as it starts: each backend up or down as its health
    /// section says a new backend starts.
    pub fn from_config(config: &tandem_config::Service) -> Self {
        let up = config.health.starts_up();
        Self::with(config, |spec| Backend {
            address: spec.address.0,
            weight: spec.weight.get(),
            backup: spec.backup,
            available: up,
        })
    }

    /// The service with its backends' current state (health, drain, weight).
    pub fn with_state(
        config: &tandem_config::Service,
        state: &[Arc<tandem_core::Backend>],
    ) -> Self {
        Self::with(config, |spec| {
            match state.iter().find(|b| b.address() == spec.address) {
                Some(b) => Backend {
                    address: spec.address.0,
                    weight: b.weight().get(),
                    backup: b.is_backup(),
                    available: b.is_available(),
                },
                None => Backend {
                    address: spec.address.0,
                    weight: spec.weight.get(),
                    backup: spec.backup,
                    available: config.health.starts_up(),
                },
            }
        })
    }

    fn with(
        config: &tandem_config::Service,
        backend: impl Fn(&tandem_config::BackendSpec) -> Backend,
    ) -> Self {
        Service {
            name: config.name.clone(),
            protocol: config.protocol,
            listen: config.listen.0,
            scheduler: config.scheduler,
            hash_key: config.hash_key,
            on_all_down: config.on_all_down,
            byte_counters: config.nat_byte_counters,
            backends: config.backends.iter().map(backend).collect(),
        }
    }

    /// The backends new flows may go to, as the userspace schedulers choose
    /// them: available primaries; else available backups; else, with
    /// `on_all_down: try_all`, every backend; else none (refuse).
    pub fn pickable(&self) -> Vec<usize> {
        let of = |primary: bool| -> Vec<usize> {
            (0..self.backends.len())
                .filter(|&i| self.backends[i].available && self.backends[i].backup != primary)
                .collect()
        };
        let primaries = of(true);
        if !primaries.is_empty() {
            return primaries;
        }
        let backups = of(false);
        if !backups.is_empty() {
            return backups;
        }
        match self.on_all_down {
            OnAllDown::TryAll => (0..self.backends.len()).collect(),
            OnAllDown::Reject => Vec::new(),
        }
    }
}

/// A named counter of the table and what it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterName {
    pub service: String,
    pub backend: SocketAddr,
    /// The counters' common prefix: `<prefix>_new`, `_orig`, `_reply`.
    pub prefix: String,
}

/// The transaction, and the counters it declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub counters: Vec<CounterName>,
}

fn family(a: &SocketAddr) -> &'static str {
    if a.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// `<address> . <port>` as nft writes an address and port concatenation.
fn target(a: &SocketAddr) -> String {
    format!("{} . {}", a.ip(), a.port())
}

/// The expression that picks a slot `0..n` for a new flow.
fn pick(service: &Service, n: usize) -> String {
    let fam = family(&service.listen);
    match service.scheduler {
        SchedulerKind::Random => format!("numgen random mod {n}"),
        SchedulerKind::SourceHash => match service.hash_key {
            HashKey::SourceIp => format!("jhash {fam} saddr mod {n}"),
            HashKey::SourceIpPort => format!("jhash {fam} saddr . th sport mod {n}"),
        },
        // least_connections is refused by the config for nat services (the
        // kernel does not know the counts); round robin is the safe reading.
        SchedulerKind::RoundRobin | SchedulerKind::LeastConnections => {
            format!("numgen inc mod {n}")
        }
    }
}

fn slots_of(service: &Service, picked: &[usize]) -> Vec<usize> {
    let weights: Vec<u32> = picked
        .iter()
        .map(|&i| service.backends[i].weight.max(1))
        .collect();
    let local = match service.scheduler {
        SchedulerKind::Random => slots::blocks(&weights),
        SchedulerKind::SourceHash => {
            let keys: Vec<u64> = picked
                .iter()
                .map(|&i| address_key(&service.backends[i].address))
                .collect();
            slots::hashed(&keys, &weights)
        }
        SchedulerKind::RoundRobin | SchedulerKind::LeastConnections => slots::round_robin(&weights),
    };
    local.into_iter().map(|k| picked[k]).collect()
}

fn address_key(a: &SocketAddr) -> u64 {
    let mut h = u64::from(a.port());
    match a.ip() {
        std::net::IpAddr::V4(ip) => h = slots::mix(h ^ u64::from(u32::from(ip))),
        std::net::IpAddr::V6(ip) => {
            let v = u128::from(ip);
            h = slots::mix(h ^ (v as u64));
            h = slots::mix(h ^ ((v >> 64) as u64));
        }
    }
    h
}

/// One backend's counters: the flow key the byte counters match (protocol,
/// service address, backend) and the counters' name, under the service that
/// declared them; `bytes` when any service with that key counts bytes.
struct Counted {
    family: &'static str,
    key: String,
    name: CounterName,
    bytes: bool,
}

/// Every backend's counters, once per flow key (a backend listed under two
/// services of one address and protocol is counted under the first), and for
/// each service the index of each backend's entry.
fn counted(services: &[Service]) -> (Vec<Counted>, Vec<Vec<Option<usize>>>) {
    let mut all: Vec<Counted> = Vec::new();
    let mut of = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let mut mine = Vec::new();
        for (j, b) in s.backends.iter().enumerate() {
            if b.address.is_ipv4() != s.listen.is_ipv4() {
                mine.push(None);
                continue;
            }
            let family = family(&s.listen);
            let key = format!(
                "{} . {} . {}",
                proto(s.protocol),
                s.listen.ip(),
                target(&b.address)
            );
            let at = match all.iter().position(|c| c.family == family && c.key == key) {
                Some(k) => {
                    all[k].bytes |= s.byte_counters;
                    k
                }
                None => {
                    all.push(Counted {
                        family,
                        key,
                        name: CounterName {
                            service: s.name.clone(),
                            backend: b.address,
                            prefix: format!("s{i}_b{j}"),
                        },
                        bytes: s.byte_counters,
                    });
                    all.len() - 1
                }
            };
            mine.push(Some(at));
        }
        of.push(mine);
    }
    (all, of)
}

/// The whole table for `services` (all of them `forwarding: nat`), replacing
/// whatever table of that name exists, in one transaction.
pub fn render(services: &[Service]) -> Rendered {
    let mut t = String::new();
    let w = &mut t;
    let (counted, index) = counted(services);
    // Creating then deleting makes the delete valid when there is no table yet.
    let _ = writeln!(w, "table {TABLE} {{}}");
    let _ = writeln!(w, "delete table {TABLE}");
    let _ = writeln!(w, "table {TABLE} {{");
    let _ = writeln!(
        w,
        "\tcomment \"written by tandem (forwarding: nat); rewritten whole on every change, do not edit\""
    );
    for c in &counted {
        let kinds: &[&str] = if c.bytes {
            &["new", "orig", "reply"]
        } else {
            &["new"]
        };
        for what in kinds {
            let _ = writeln!(w, "\tcounter {}_{what} {{ }}", c.name.prefix);
        }
    }
    for hook in ["prerouting", "output"] {
        let _ = writeln!(w, "\tchain {hook} {{");
        let _ = writeln!(w, "\t\ttype nat hook {hook} priority -100; policy accept;");
        let _ = writeln!(w, "\t\tjump services");
        let _ = writeln!(w, "\t}}");
    }
    let _ = writeln!(w, "\tchain services {{");
    for fam in ["ip", "ip6"] {
        let entries: Vec<String> = services
            .iter()
            .enumerate()
            .filter(|(_, s)| family(&s.listen) == fam)
            .map(|(i, s)| {
                format!(
                    "{} . {} . {} : jump service_{i}",
                    s.listen.ip(),
                    proto(s.protocol),
                    s.listen.port()
                )
            })
            .collect();
        if !entries.is_empty() {
            let _ = writeln!(
                w,
                "\t\t{fam} daddr . meta l4proto . th dport vmap {{ {} }}",
                entries.join(", ")
            );
        }
    }
    let _ = writeln!(w, "\t}}");
    // A nat chain sees only the first packet of a flow: the jump to a
    // backend's own chain counts new flows at no cost to the packets after.
    let mut targets: Vec<(String, String)> = Vec::new(); // (chain, dnat statement)
    for (i, s) in services.iter().enumerate() {
        let p = proto(s.protocol);
        let _ = writeln!(w, "\tchain service_{i} {{");
        let _ = writeln!(w, "\t\tcomment {}", quoted(&s.name));
        let picked = s.pickable();
        if picked.is_empty() {
            let refuse = match s.protocol {
                Protocol::Tcp => "reject with tcp reset",
                Protocol::Udp => "reject with icmpx port-unreachable",
            };
            let _ = writeln!(w, "\t\tmeta l4proto {p} {refuse}");
        } else {
            let slots = slots_of(s, &picked);
            let mut chain_of = |k: usize| -> String {
                let to = &s.backends[k].address;
                let (chain, count) = match index[i][k] {
                    Some(c) => (
                        counted[c].name.prefix.clone(),
                        format!("counter name \"{}_new\" ", counted[c].name.prefix),
                    ),
                    None => (format!("s{i}_b{k}"), String::new()),
                };
                if !targets.iter().any(|(c, _)| *c == chain) {
                    // SocketAddr's Display is what dnat takes: `ip:port`, `[ip6]:port`.
                    let dnat =
                        format!("meta l4proto {p} {count}dnat {} to {to}", family(&s.listen));
                    targets.push((chain.clone(), dnat));
                }
                chain
            };
            let map: Vec<String> = slots::ranges(&slots)
                .into_iter()
                .map(|(a, b, k)| {
                    let to = chain_of(k);
                    if a == b {
                        format!("{a} : jump {to}")
                    } else {
                        format!("{a}-{b} : jump {to}")
                    }
                })
                .collect();
            let _ = writeln!(
                w,
                "\t\tmeta l4proto {p} {} vmap {{ {} }}",
                pick(s, slots.len()),
                map.join(", ")
            );
        }
        let _ = writeln!(w, "\t}}");
    }
    for (chain, dnat) in &targets {
        let _ = writeln!(w, "\tchain {chain} {{");
        let _ = writeln!(w, "\t\t{dnat}");
        let _ = writeln!(w, "\t}}");
    }
    // Not on loopback: its addresses have host scope, so masquerade would
    // find no source address and drop the packet; a flow that stays on the
    // node needs no SNAT to come back.
    let _ = writeln!(w, "\tchain postrouting {{");
    let _ = writeln!(
        w,
        "\t\ttype nat hook postrouting priority 100; policy accept;"
    );
    for s in services {
        let _ = writeln!(
            w,
            "\t\toifname != \"lo\" ct status dnat meta l4proto {} ct original {} daddr {} ct original proto-dst {} masquerade",
            proto(s.protocol),
            family(&s.listen),
            s.listen.ip(),
            s.listen.port()
        );
    }
    let _ = writeln!(w, "\t}}");
    bytes(w, &counted);
    let _ = writeln!(w, "}}");
    let counters = counted.into_iter().map(|c| c.name).collect();
    Rendered { text: t, counters }
}

/// The byte counters: every packet of the host passes the two filter hooks
/// below, so a packet of a flow tandem did not translate leaves after one
/// test of its conntrack status, and one of a translated flow costs one
/// direction lookup and one map lookup. With no flow to count bytes of
/// (every service `nat_byte_counters: false`) the hooks are not there at all.
fn bytes(w: &mut String, counted: &[Counted]) {
    let counted: Vec<&Counted> = counted.iter().filter(|c| c.bytes).collect();
    if counted.is_empty() {
        return;
    }
    let vmap = "ct status dnat ct direction vmap { original : jump count_original, reply : jump count_reply }";
    let _ = writeln!(w, "\tchain count_prerouting {{");
    let _ = writeln!(
        w,
        "\t\ttype filter hook prerouting priority 0; policy accept;"
    );
    // Loopback packets were counted on their way out.
    let _ = writeln!(w, "\t\tiif \"lo\" return");
    let _ = writeln!(w, "\t\t{vmap}");
    let _ = writeln!(w, "\t}}");
    let _ = writeln!(w, "\tchain count_output {{");
    let _ = writeln!(w, "\t\ttype filter hook output priority 0; policy accept;");
    let _ = writeln!(w, "\t\t{vmap}");
    let _ = writeln!(w, "\t}}");
    for (direction, what, addr, port) in [
        ("original", "orig", "daddr", "dport"),
        ("reply", "reply", "saddr", "sport"),
    ] {
        let _ = writeln!(w, "\tchain count_{direction} {{");
        for fam in ["ip", "ip6"] {
            let map: Vec<String> = counted
                .iter()
                .filter(|c| c.family == fam)
                .map(|c| format!("{} : \"{}_{what}\"", c.key, c.name.prefix))
                .collect();
            if !map.is_empty() {
                let _ = writeln!(
                    w,
                    "\t\tcounter name meta l4proto . ct original {fam} daddr . {fam} {addr} . th {port} map {{ {} }}",
                    map.join(", ")
                );
            }
        }
        let _ = writeln!(w, "\t}}");
    }
}

/// The table for every `forwarding: nat` service of `config`, each backend
/// in its starting state: what a start applies and what `tandem check` and a
/// reload dry-run.
pub fn render_config(config: &tandem_config::Config) -> Rendered {
    let services: Vec<Service> = config
        .services
        .iter()
        .filter(|s| s.forwarding == tandem_core::Forwarding::Nat)
        .map(Service::from_config)
        .collect();
    render(&services)
}

/// The transaction that removes the table, valid whether or not it exists.
pub fn render_delete() -> String {
    format!("table {TABLE} {{}}\ndelete table {TABLE}\n")
}

/// An nft string literal: names are letters, digits, `.`, `_` and `-`
/// (config validation), so only the quotes are needed.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace(['"', '\\'], ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backend(a: &str, weight: u32, backup: bool, available: bool) -> Backend {
        Backend {
            address: a.parse().unwrap(),
            weight,
            backup,
            available,
        }
    }

    fn service(
        name: &str,
        protocol: Protocol,
        listen: &str,
        scheduler: SchedulerKind,
        backends: Vec<Backend>,
    ) -> Service {
        Service {
            name: name.to_owned(),
            protocol,
            listen: listen.parse().unwrap(),
            scheduler,
            hash_key: HashKey::SourceIp,
            on_all_down: OnAllDown::Reject,
            byte_counters: true,
            backends,
        }
    }

    fn example() -> Vec<Service> {
        vec![
            service(
                "api",
                Protocol::Tcp,
                "198.18.0.100:8443",
                SchedulerKind::RoundRobin,
                vec![
                    backend("198.18.0.11:6443", 2, false, true),
                    backend("198.18.0.12:6443", 1, false, true),
                    backend("198.18.0.13:6443", 1, false, false),
                    backend("198.18.0.14:6443", 1, true, true),
                ],
            ),
            service(
                "dns",
                Protocol::Udp,
                "198.18.0.100:53",
                SchedulerKind::Random,
                vec![
                    backend("198.18.0.21:53", 1, false, true),
                    backend("198.18.0.22:53", 3, false, true),
                ],
            ),
            service(
                "down",
                Protocol::Tcp,
                "[2001:db8::100]:80",
                SchedulerKind::SourceHash,
                vec![backend("[2001:db8::1]:80", 1, false, false)],
            ),
        ]
    }

    /// The golden file is the contract with the kernel and with operators
    /// who read `nft list table inet tandem`; `TANDEM_BLESS=1` rewrites it.
    #[test]
    fn renders_the_golden_table() {
        let got = render(&example()).text;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/example.nft");
        if std::env::var("TANDEM_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).unwrap();
        assert_eq!(got, want, "rendered table differs from {path}");
    }

    #[test]
    fn backups_only_when_no_primary_and_refusal_when_none() {
        let mut s = example().remove(0);
        assert_eq!(s.pickable(), vec![0, 1]);
        s.backends[0].available = false;
        s.backends[1].available = false;
        assert_eq!(s.pickable(), vec![3]);
        s.backends[3].available = false;
        assert!(s.pickable().is_empty());
        assert!(render(&[s.clone()])
            .text
            .contains("meta l4proto tcp reject with tcp reset"));
        s.on_all_down = OnAllDown::TryAll;
        assert_eq!(s.pickable(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn counters_are_declared_once_per_backend_key() {
        let r = render(&example());
        assert_eq!(r.counters.len(), 7);
        assert_eq!(r.counters[0].prefix, "s0_b0");
        assert_eq!(r.text.matches("counter s0_b0_").count(), 3);
    }

    /// Services `a` and `b` on two ports of one address, with one backend.
    fn sharing_one_backend() -> Vec<Service> {
        let b = || vec![backend("198.18.0.11:80", 1, false, true)];
        let on = |name: &str, listen: &str| {
            service(name, Protocol::Tcp, listen, SchedulerKind::RoundRobin, b())
        };
        vec![on("a", "198.18.0.100:80"), on("b", "198.18.0.100:81")]
    }

    /// Two services of one address and protocol sharing a backend: one
    /// chain and one set of counters, declared by the first.
    #[test]
    fn a_shared_backend_is_counted_once() {
        let r = render(&sharing_one_backend());
        assert_eq!(r.counters.len(), 1);
        assert_eq!(r.counters[0].service, "a");
        assert_eq!(r.text.matches("chain s0_b0 {").count(), 1);
        assert!(!r.text.contains("chain s1_b0"));
        let second = r.text.split("chain service_1 {").nth(1).unwrap();
        assert!(
            second
                .lines()
                .nth(2)
                .unwrap()
                .contains("vmap { 0 : jump s0_b0 }"),
            "{second}"
        );
    }

    /// `nat_byte_counters: false` leaves a service's flows counted in its
    /// nat chains and its bytes uncounted; with no service counting bytes
    /// the table hooks no filter chain, so no rule runs on every packet.
    #[test]
    fn byte_counters_are_a_choice_per_service() {
        let mut services = example();
        services[0].byte_counters = false;
        let r = render(&services);
        assert_eq!(r.text.matches("counter s0_b0_").count(), 1);
        assert!(r.text.contains("counter s0_b0_new { }"));
        assert!(!r.text.contains("s0_b0_orig") && !r.text.contains("s0_b0_reply"));
        assert!(r.text.contains("counter s1_b0_orig { }"));
        assert!(r.text.contains("\"s1_b0_orig\""));
        assert!(r.text.contains("counter name \"s0_b0_new\" dnat"));
        assert!(r.text.contains("chain count_output {"));

        for s in &mut services {
            s.byte_counters = false;
        }
        let r = render(&services);
        assert!(!r.text.contains("type filter hook"), "{}", r.text);
        assert!(!r.text.contains("_orig") && !r.text.contains("_reply"));
        assert_eq!(r.counters.len(), 7);
    }

    /// A backend shared by two services is counted in bytes when either
    /// service asks for it.
    #[test]
    fn a_shared_backend_counts_bytes_when_either_service_does() {
        let mut services = sharing_one_backend();
        services[0].byte_counters = false;
        let r = render(&services);
        assert!(r.text.contains("counter s0_b0_orig { }"), "{}", r.text);
        assert!(r.text.contains("chain count_output {"));
    }

    /// Slots per backend (`address . port`) in the vmap of `service_0`,
    /// each followed to the chain that DNATs.
    fn shares(text: &str) -> std::collections::HashMap<String, usize> {
        let chain = text.split("chain service_0 {").nth(1).unwrap();
        let line = chain.lines().find(|l| l.contains("vmap")).unwrap();
        let map = line.split("vmap { ").nth(1).unwrap().trim_end_matches(" }");
        let mut out = std::collections::HashMap::new();
        for entry in map.split(", ") {
            let (slots, jump) = entry.split_once(" : jump ").unwrap();
            let n = match slots.split_once('-') {
                Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                None => 1,
            };
            let body = text.split(&format!("chain {jump} {{")).nth(1).unwrap();
            let dnat = body.lines().find(|l| l.contains(" dnat ")).unwrap();
            assert!(
                dnat.contains(&format!("counter name \"{jump}_new\"")),
                "{dnat}"
            );
            let to: std::net::SocketAddr = dnat.rsplit(" to ").next().unwrap().parse().unwrap();
            *out.entry(target(&to)).or_default() += n;
        }
        out
    }

    proptest! {
        /// Every available primary appears with exactly its (reduced)
        /// weight in slots; unavailable ones and backups do not appear.
        #[test]
        fn every_available_backend_has_its_weight_share(
            spec in prop::collection::vec((1u32..=256, any::<bool>(), any::<bool>()), 1..10),
            random in any::<bool>(),
        ) {
            let backends: Vec<Backend> = spec
                .iter()
                .enumerate()
                .map(|(i, &(w, up, backup))| backend(&format!("198.18.1.{}:80", i + 1), w, backup, up))
                .collect();
            let kind = if random { SchedulerKind::Random } else { SchedulerKind::RoundRobin };
            let s = service("s", Protocol::Tcp, "198.18.0.1:80", kind, backends.clone());
            let picked = s.pickable();
            let text = render(&[s]).text;
            if picked.is_empty() {
                prop_assert!(text.contains("reject with tcp reset"));
                prop_assert!(backends.iter().all(|b| !b.available));
                return Ok(());
            }
            let shares = shares(&text);
            let g = picked.iter().map(|&i| backends[i].weight).fold(0, |a, b| {
                let (mut a, mut b) = (a, b);
                while b != 0 { (a, b) = (b, a % b); }
                a
            });
            let has_primary = backends.iter().any(|b| b.available && !b.backup);
            for (i, b) in backends.iter().enumerate() {
                let key = format!("{} . {}", b.address.ip(), b.address.port());
                let want = b.available && b.backup != has_primary;
                prop_assert_eq!(picked.contains(&i), want);
                if want {
                    prop_assert_eq!(shares.get(&key).copied(), Some((b.weight / g) as usize));
                } else {
                    prop_assert!(!shares.contains_key(&key));
                }
            }
        }
    }
}
