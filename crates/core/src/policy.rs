//! The per-service policies that several crates act on: which scheduler, what
//! `source_hash` hashes, what to do when every backend is down, how bytes are
//! moved. Config parses them, the scheduler and forwarder act on them; with one
//! definition here there is nothing to translate between the two.
//!
//! Each type carries the words the config file uses for it (`NAMES`), so the
//! parser, `tandem check`, logs and the status table spell them one way.

/// Backend selection (`scheduler:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConnections,
    /// Maglev consistent hashing of the client address ([`HashKey`]).
    SourceHash,
    /// Power of two weighted random choices.
    Random,
}

/// What `source_hash` hashes (`hash_key:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client IP: every connection of one client goes to the same backend.
    #[default]
    SourceIp,
    /// The client IP and port: spreads one client's connections, keeps each
    /// (re)connection from the same port on the same backend.
    SourceIpPort,
}

/// What to do with a new connection when no backend is available (`on_all_down:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAllDown {
    /// Close it at once and count it.
    Reject,
    /// Try every backend anyway, down ones included.
    TryAll,
}

/// How a service's packets or bytes are moved (`forwarding:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// splice(2) through pooled pipes for bulk transfers, a copy for small messages.
    Splice,
    /// Always read/write through a userspace buffer.
    Copy,
    /// The kernel forwards: tandem writes nftables DNAT/SNAT rules for the
    /// service and opens no socket on its address (TCP and UDP).
    Nat,
}

impl Forwarding {
    /// Whether tandem itself accepts and relays this service's traffic.
    pub fn in_userspace(self) -> bool {
        self != Forwarding::Nat
    }
}

/// Which PROXY protocol header tandem writes to a backend (`proxy_protocol.send:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text line (`PROXY TCP4 ...`), TCP only.
    V1,
    /// The binary header; TCP and UDP.
    V2,
}

/// The word of `value` in `table`.
fn name_in<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("?", |(n, _)| n)
}

macro_rules! named {
    ($type:ty, [$(($word:literal, $value:expr)),+ $(,)?]) => {
        impl $type {
            /// Every value with the word the config file uses for it.
            pub const NAMES: &'static [(&'static str, $type)] = &[$(($word, $value)),+];

            /// The word the config file uses (`least_connections`).
            pub fn as_str(self) -> &'static str {
                name_in(Self::NAMES, self)
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(
    SchedulerKind,
    [
        ("round_robin", SchedulerKind::RoundRobin),
        ("least_connections", SchedulerKind::LeastConnections),
        ("source_hash", SchedulerKind::SourceHash),
        ("random", SchedulerKind::Random),
    ]
);
named!(
    HashKey,
    [
        ("source_ip", HashKey::SourceIp),
        ("source_ip_port", HashKey::SourceIpPort),
    ]
);
named!(
    OnAllDown,
    [
        ("reject", OnAllDown::Reject),
        ("try_all", OnAllDown::TryAll)
    ]
);
named!(
    ProxyVersion,
    [("v1", ProxyVersion::V1), ("v2", ProxyVersion::V2)]
);
named!(
    Forwarding,
    [
        ("splice", Forwarding::Splice),
        ("copy", Forwarding::Copy),
        ("nat", Forwarding::Nat),
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: PartialEq + Copy + std::fmt::Debug>(
        names: &[(&'static str, T)],
        as_str: fn(T) -> &'static str,
    ) {
        for (word, value) in names {
            assert_eq!(as_str(*value), *word, "{value:?}");
        }
        let mut words: Vec<_> = names.iter().map(|(w, _)| *w).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), names.len(), "a word is used twice");
    }

    #[test]
    fn every_value_has_one_word() {
        round_trips(SchedulerKind::NAMES, SchedulerKind::as_str);
        round_trips(HashKey::NAMES, HashKey::as_str);
        round_trips(OnAllDown::NAMES, OnAllDown::as_str);
        round_trips(Forwarding::NAMES, Forwarding::as_str);
        round_trips(ProxyVersion::NAMES, ProxyVersion::as_str);
        assert_eq!(SchedulerKind::NAMES.len(), 4);
        assert_eq!(
            SchedulerKind::LeastConnections.to_string(),
            "least_connections"
        );
    }
}
