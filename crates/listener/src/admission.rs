//! Who may connect, decided before any backend is contacted: the PROXY
//! header (`proxy_protocol.accept`), `allow`/`deny`, and per-source limits.
//!
//! The rules come from the service's snapshot (so a reload changes them for
//! the next connection); the per-source counts live in the service's
//! [`SourceTable`], which a reload keeps. A refusal is counted by reason and
//! logged at most once a second per service and reason.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tandem_config::{Admission, ProxyVersion, SourceLimits};
use tandem_proxy_protocol::{decode, DecodeError, Decoded, Header, MAX_HEADER_LEN};
use tokio::net::TcpStream;
use tracing::warn;

use crate::budget::LogEverySecond;

/// The codec's name for a configured version.
pub(crate) fn proxy_version(v: ProxyVersion) -> tandem_proxy_protocol::Version {
    match v {
        ProxyVersion::V1 => tandem_proxy_protocol::Version::V1,
        ProxyVersion::V2 => tandem_proxy_protocol::Version::V2,
    }
}

/// Why a client was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In a `deny` network, or outside every `allow` network.
    Denied,
    /// `accept: true` and the connection is not from a `trusted` address.
    ProxyUntrusted,
    /// The client closed, or sent something else, before a header.
    ProxyMissing,
    ProxyMalformed,
    ProxyTimeout,
    /// `connections_per_source` reached.
    SourceConnections,
    /// `new_connections_per_source` exceeded.
    SourceRate,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::Denied,
        Refusal::ProxyUntrusted,
        Refusal::ProxyMissing,
        Refusal::ProxyMalformed,
        Refusal::ProxyTimeout,
        Refusal::SourceConnections,
        Refusal::SourceRate,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Denied => "denied",
            Refusal::ProxyUntrusted => "proxy_untrusted",
            Refusal::ProxyMissing => "proxy_missing",
            Refusal::ProxyMalformed => "proxy_malformed",
            Refusal::ProxyTimeout => "proxy_timeout",
            Refusal::SourceConnections => "source_connections",
            Refusal::SourceRate => "source_rate",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every refusal")
    }

    fn describe(self) -> &'static str {
        match self {
            Refusal::Denied => "client not allowed by allow/deny",
            Refusal::ProxyUntrusted => "connection from an address not in proxy_protocol.trusted",
            Refusal::ProxyMissing => "no PROXY header",
            Refusal::ProxyMalformed => "malformed PROXY header",
            Refusal::ProxyTimeout => "PROXY header not received within proxy_protocol.timeout",
            Refusal::SourceConnections => "limits.connections_per_source reached",
            Refusal::SourceRate => "limits.new_connections_per_source exceeded",
        }
    }
}

impl From<&DecodeError> for Refusal {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::Missing => Refusal::ProxyMissing,
            DecodeError::TooLong | DecodeError::Malformed(_) => Refusal::ProxyMalformed,
        }
    }
}

/// Refusals of one service, by reason, with the rate limit of their log.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; 7],
    logged: [LogEverySecond; 7],
}

impl Refusals {
    /// Counts one refusal and logs it unless this reason was logged less than
    /// a second ago.
    pub fn record(&self, service: &str, client: SocketAddr, refusal: Refusal) {
        let i = refusal.index();
        let total = self.counts[i].fetch_add(1, Relaxed) + 1;
        if self.logged[i].due() {
            warn!(
                service,
                client = %client,
                reason = refusal.as_str(),
                refused_so_far = total,
                "connection refused: {} (logged at most once a second)",
                refusal.describe()
            );
        }
    }

    /// Every reason with its count, for metrics.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL
            .iter()
            .map(|r| (r.as_str(), self.counts[r.index()].load(Relaxed)))
    }

    pub fn count(&self, refusal: Refusal) -> u64 {
        self.counts[refusal.index()].load(Relaxed)
    }
}

/// Whether `allow` and `deny` let `client` in.
pub fn allowed(admission: &Admission, client: IpAddr) -> bool {
    !admission.deny.iter().any(|n| n.contains(client))
        && (admission.allow.is_empty() || admission.allow.iter().any(|n| n.contains(client)))
}

/// The PROXY header from a trusted peer, read whole within `timeout`; the
/// bytes that came after it in the same reads are returned too (the client's
/// first bytes, for the backend).
pub async fn read_header(
    client: &TcpStream,
    timeout: Duration,
) -> Result<(Header, Vec<u8>), Refusal> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            if buf.len() == buf.capacity() {
                // Grows to at most MAX_HEADER_LEN: decode refuses anything longer.
                buf.reserve((buf.capacity() * 2).min(MAX_HEADER_LEN) - buf.len());
            }
            client.readable().await.map_err(|_| Refusal::ProxyMissing)?;
            match client.try_read_buf(&mut buf) {
                Ok(0) => return Err(Refusal::ProxyMissing),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(Refusal::ProxyMissing),
            }
            match decode(&buf) {
                Ok(Decoded::Complete { header, length }) => {
                    return Ok((header, buf.split_off(length)));
                }
                Ok(Decoded::Incomplete) if buf.len() < MAX_HEADER_LEN => {}
                Ok(Decoded::Incomplete) => return Err(Refusal::ProxyMalformed),
                Err(e) => return Err(Refusal::from(&e)),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(Refusal::ProxyTimeout))
}

/// The open connections and recent new ones of each source of one service.
/// Sharded by source so that accepts on several threads rarely meet on a lock.
#[derive(Debug)]
pub struct SourceTable {
    shards: [Mutex<HashMap<IpAddr, Entry>>; SHARDS],
}

const SHARDS: usize = 16;

/// A shard with more entries than this drops the idle ones when it grows.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    active: u32,
    tokens: f64,
    refilled: Instant,
    /// When the bucket will be full again: until then an idle entry is kept.
    full_at: Instant,
}

impl Default for SourceTable {
    fn default() -> Self {
        SourceTable {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

/// One admitted connection of a source, given back on drop.
#[derive(Debug)]
pub struct SourceGuard {
    table: Arc<SourceTable>,
    source: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut shard = self.table.shard(self.source);
        if let Some(e) = shard.get_mut(&self.source) {
            e.active = e.active.saturating_sub(1);
            if e.active == 0 && Instant::now() >= e.full_at {
                shard.remove(&self.source);
            }
        }
    }
}

impl SourceTable {
    fn shard(&self, source: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let h = match source {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => (u128::from(v6) ^ (u128::from(v6) >> 64)) as usize,
        };
        let i = (h ^ (h >> 16)) % SHARDS;
        // Entries are updated in place under the lock and never left half-written.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one new connection from `client` under `limits`, at `now`.
    pub fn admit(
        self: &Arc<Self>,
        client: IpAddr,
        limits: &SourceLimits,
        now: Instant,
    ) -> Result<SourceGuard, Refusal> {
        let source = source_of(client, limits);
        let mut shard = self.shard(source);
        if shard.len() > SWEEP_ABOVE {
            shard.retain(|_, e| e.active > 0 || e.full_at > now);
        }
        let capacity = limits
            .new_connections_per_source
            .map_or(0.0, |r| f64::from(r.count.get()));
        let entry = shard.entry(source).or_insert(Entry {
            active: 0,
            tokens: capacity,
            refilled: now,
            full_at: now,
        });
        if let Some(max) = limits.connections_per_source {
            if entry.active >= max.get() {
                return Err(Refusal::SourceConnections);
            }
        }
        if let Some(rate) = limits.new_connections_per_source {
            let per_second = capacity / rate.per.as_secs_f64();
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * per_second).min(capacity);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                return Err(Refusal::SourceRate);
            }
            entry.tokens -= 1.0;
            entry.full_at = now + Duration::from_secs_f64((capacity - entry.tokens) / per_second);
        }
        entry.active += 1;
        Ok(SourceGuard {
            table: Arc::clone(self),
            source,
        })
    }

    /// Sources with an entry now (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The client address cut to the configured prefix; IPv4-mapped IPv6 as IPv4.
pub fn source_of(client: IpAddr, limits: &SourceLimits) -> IpAddr {
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    match client {
        IpAddr::V4(v4) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(limits.ipv4_prefix))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(limits.ipv6_prefix))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use tandem_config::Rate;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(conns: Option<u32>, rate: Option<(u32, u64)>) -> SourceLimits {
        SourceLimits {
            connections_per_source: conns.and_then(NonZeroU32::new),
            new_connections_per_source: rate.map(|(n, secs)| Rate {
                count: NonZeroU32::new(n).unwrap(),
                per: Duration::from_secs(secs),
            }),
            ..SourceLimits::default()
        }
    }

    #[test]
    fn concurrent_connections_are_limited_per_source_and_given_back() {
        let table = Arc::new(SourceTable::default());
        let l = limits(Some(2), None);
        let now = Instant::now();
        let a1 = table.admit(ip("198.18.0.1"), &l, now).unwrap();
        let _a2 = table.admit(ip("198.18.0.1"), &l, now).unwrap();
        assert_eq!(
            table.admit(ip("198.18.0.1"), &l, now).unwrap_err(),
            Refusal::SourceConnections
        );
        let _b = table
            .admit(ip("198.18.0.2"), &l, now)
            .expect("another source is unaffected");
        drop(a1);
        let _a3 = table
            .admit(ip("198.18.0.1"), &l, now)
            .expect("a slot came back");
    }

    #[test]
    fn new_connections_follow_a_token_bucket() {
        let table = Arc::new(SourceTable::default());
        let l = limits(None, Some((3, 1)));
        let t0 = Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(table.admit(ip("198.18.0.1"), &l, t0).unwrap());
        }
        assert_eq!(
            table.admit(ip("198.18.0.1"), &l, t0).unwrap_err(),
            Refusal::SourceRate,
            "the burst is the count"
        );
        let later = t0 + Duration::from_millis(340);
        assert!(
            table.admit(ip("198.18.0.1"), &l, later).is_ok(),
            "one token back after 1/3 s"
        );
        assert_eq!(
            table.admit(ip("198.18.0.1"), &l, later).unwrap_err(),
            Refusal::SourceRate
        );
        assert!(
            table.admit(ip("198.18.0.9"), &l, t0).is_ok(),
            "others have their own bucket"
        );
    }

    #[test]
    fn idle_sources_leave_the_table() {
        let table = Arc::new(SourceTable::default());
        let l = limits(Some(5), None);
        let now = Instant::now();
        let guards: Vec<_> = (0..50u8)
            .map(|i| table.admit(IpAddr::from([198, 18, 1, i]), &l, now).unwrap())
            .collect();
        assert_eq!(table.len(), 50);
        drop(guards);
        assert!(table.is_empty());
    }

    #[test]
    fn sources_are_cut_to_their_prefix() {
        let mut l = limits(Some(1), None);
        l.ipv4_prefix = 24;
        l.ipv6_prefix = 64;
        assert_eq!(source_of(ip("198.18.7.9"), &l), ip("198.18.7.0"));
        assert_eq!(source_of(ip("::ffff:198.18.7.9"), &l), ip("198.18.7.0"));
        assert_eq!(
            source_of(ip("2001:db8:1:2:3:4:5:6"), &l),
            ip("2001:db8:1:2::")
        );
        let table = Arc::new(SourceTable::default());
        let _a = table.admit(ip("198.18.7.1"), &l, Instant::now()).unwrap();
        assert_eq!(
            table
                .admit(ip("198.18.7.2"), &l, Instant::now())
                .unwrap_err(),
            Refusal::SourceConnections,
            "one /24 is one source"
        );
    }

    #[test]
    fn allow_and_deny() {
        let net = |s: &str| {
            let (a, l) = s.split_once('/').unwrap();
            tandem_config::IpPrefix {
                address: ip(a),
                prefix_len: l.parse().unwrap(),
            }
        };
        let mut a = Admission::default();
        assert!(allowed(&a, ip("203.0.113.1")));
        a.allow = vec![net("198.18.0.0/15")];
        a.deny = vec![net("198.18.5.0/24")];
        assert!(allowed(&a, ip("198.19.0.1")));
        assert!(!allowed(&a, ip("198.18.5.7")), "deny wins");
        assert!(!allowed(&a, ip("203.0.113.1")), "outside allow");
        assert!(allowed(&a, ip("::ffff:198.18.0.1")));
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let r = Refusals::default();
        let peer: SocketAddr = "198.18.0.1:1000".parse().unwrap();
        for _ in 0..3 {
            r.record("svc", peer, Refusal::SourceRate);
        }
        r.record("svc", peer, Refusal::Denied);
        assert_eq!(r.count(Refusal::SourceRate), 3);
        let counts: HashMap<_, _> = r.counts().collect();
        assert_eq!((counts["denied"], counts["proxy_timeout"]), (1, 0));
        assert_eq!(counts.len(), Refusal::ALL.len());
    }
}
