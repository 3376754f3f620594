//! The backend and its atomics.
//!
//! A backend is identified by its address (and optional name); its weight and
//! backup flag can be changed by a reload in place so that the `Arc<Backend>`,
//! with its health state and counters, carries over.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use crate::{BackendAddress, ProxyVersion};

/// What an operator or a scheduler sees of a backend at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    Up,
    Down,
    Draining,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Draining => "draining",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connect to a backend failed, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Other,
}

impl ConnectFailure {
    pub const ALL: [ConnectFailure; 3] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Other => "other",
        }
    }
}

/// One backend of a service, shared by everything that looks at it.
#[derive(Debug)]
pub struct Backend {
    address: BackendAddress,
    label: String,
    weight: AtomicU32,
    backup: AtomicBool,
    up: AtomicBool,
    draining: AtomicBool,
    active: AtomicU64,
    total: AtomicU64,
    bytes_from_client: AtomicU64,
    bytes_to_client: AtomicU64,
    connect_failures: [AtomicU64; 3],
    consecutive_connect_failures: AtomicU32,
    /// The PROXY header written before the client's bytes: 0 none, 1 v1, 2 v2.
    send_proxy: AtomicU8,
}

impl Backend {
    /// A backend labelled by `name` when given, else by its address.
    pub fn new(
        address: BackendAddress,
        name: Option<&str>,
        weight: NonZeroU32,
        backup: bool,
        initially_up: bool,
    ) -> Self {
        Backend {
            address,
            label: name.map_or_else(|| address.to_string(), str::to_owned),
            weight: AtomicU32::new(weight.get()),
            backup: AtomicBool::new(backup),
            up: AtomicBool::new(initially_up),
            draining: AtomicBool::new(false),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            bytes_from_client: AtomicU64::new(0),
            bytes_to_client: AtomicU64::new(0),
            connect_failures: Default::default(),
            consecutive_connect_failures: AtomicU32::new(0),
            send_proxy: AtomicU8::new(0),
        }
    }

    pub fn address(&self) -> BackendAddress {
        self.address
    }

    /// The name used in logs, metrics and status: `name` from the config, else the address.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn weight(&self) -> NonZeroU32 {
        NonZeroU32::new(self.weight.load(Relaxed)).unwrap_or(NonZeroU32::MIN)
    }

    pub fn set_weight(&self, weight: NonZeroU32) {
        self.weight.store(weight.get(), Relaxed);
    }

    pub fn is_backup(&self) -> bool {
        self.backup.load(Relaxed)
    }

    pub fn set_backup(&self, backup: bool) {
        self.backup.store(backup, Relaxed);
    }

    /// The PROXY header the listener writes to this backend (and whose
    /// `LOCAL` form health checks on the traffic port send).
    pub fn send_proxy(&self) -> Option<ProxyVersion> {
        match self.send_proxy.load(Relaxed) {
            1 => Some(ProxyVersion::V1),
            2 => Some(ProxyVersion::V2),
            _ => None,
        }
    }

    pub fn set_send_proxy(&self, version: Option<ProxyVersion>) {
        let v = match version {
            None => 0,
            Some(ProxyVersion::V1) => 1,
            Some(ProxyVersion::V2) => 2,
        };
        self.send_proxy.store(v, Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Marks the backend up or down; returns the previous value so the caller
    /// can log a change exactly once.
    pub fn set_up(&self, up: bool) -> bool {
        self.up.swap(up, Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Starts or ends an operator's drain; returns the previous value.
    pub fn set_draining(&self, draining: bool) -> bool {
        self.draining.swap(draining, Relaxed)
    }

    /// Up and not draining: may receive new connections.
    pub fn is_available(&self) -> bool {
        self.is_up() && !self.is_draining()
    }

    pub fn state(&self) -> BackendState {
        if self.is_draining() {
            BackendState::Draining
        } else if self.is_up() {
            BackendState::Up
        } else {
            BackendState::Down
        }
    }

    pub fn active_connections(&self) -> u64 {
        self.active.load(Relaxed)
    }

    pub fn total_connections(&self) -> u64 {
        self.total.load(Relaxed)
    }

    pub fn bytes_from_client(&self) -> u64 {
        self.bytes_from_client.load(Relaxed)
    }

    pub fn bytes_to_client(&self) -> u64 {
        self.bytes_to_client.load(Relaxed)
    }

    /// Failed connects of every kind since start.
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Failed connects of one kind since start.
    pub fn connect_failures_of(&self, kind: ConnectFailure) -> u64 {
        self.connect_failures[kind as usize].load(Relaxed)
    }

    pub fn add_bytes_from_client(&self, n: u64) {
        self.bytes_from_client.fetch_add(n, Relaxed);
    }

    pub fn add_bytes_to_client(&self, n: u64) {
        self.bytes_to_client.fetch_add(n, Relaxed);
    }

    /// Counts flows the kernel forwarded (`forwarding: nat`), which tandem
    /// never holds: they add to the totals, never to the active count.
    pub fn add_kernel_flows(&self, n: u64) {
        self.total.fetch_add(n, Relaxed);
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn open_connection(self: &Arc<Self>) -> ActiveConnection {
        self.active.fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        ActiveConnection {
            backend: Arc::clone(self),
        }
    }

    pub fn record_connect_success(&self) {
        self.consecutive_connect_failures.store(0, Relaxed);
    }

    /// Counts a failed connect; returns how many failed in a row, for passive ejection.
    pub fn record_connect_failure(&self, kind: ConnectFailure) -> u32 {
        self.connect_failures[kind as usize].fetch_add(1, Relaxed);
        self.consecutive_connect_failures.fetch_add(1, Relaxed) + 1
    }
}

/// Proof that a connection to a backend is open; dropping it closes the count.
#[derive(Debug)]
pub struct ActiveConnection {
    backend: Arc<Backend>,
}

impl ActiveConnection {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Relaxed);
    }
}

/// The backends of one service, in config order. Schedulers return indexes into it.
#[derive(Debug, Clone, Default)]
pub struct BackendSet {
    backends: Vec<Arc<Backend>>,
}

impl BackendSet {
    pub fn new(backends: Vec<Arc<Backend>>) -> Self {
        BackendSet { backends }
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Backend>> {
        self.backends.get(index)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Backend>> {
        self.backends.iter()
    }

    pub fn as_slice(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// True when at least one non-backup backend may take new connections.
    pub fn any_primary_available(&self) -> bool {
        self.backends
            .iter()
            .any(|b| !b.is_backup() && b.is_available())
    }

    /// The backend with this address, if the set has it (reload keeps these).
    pub fn find(&self, address: BackendAddress) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.address() == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16) -> Arc<Backend> {
        Arc::new(Backend::new(
            BackendAddress(([127, 0, 0, 1], port).into()),
            None,
            NonZeroU32::MIN,
            false,
            true,
        ))
    }

    #[test]
    fn active_connection_guard_counts_and_gives_back() {
        let b = backend(1);
        let g1 = b.open_connection();
        let g2 = b.open_connection();
        assert_eq!(b.active_connections(), 2);
        drop(g1);
        assert_eq!(b.active_connections(), 1);
        drop(g2);
        assert_eq!(b.active_connections(), 0);
        assert_eq!(b.total_connections(), 2);
    }

    #[test]
    fn state_reflects_drain_before_health() {
        let b = backend(2);
        assert_eq!(b.state(), BackendState::Up);
        b.set_up(false);
        assert_eq!(b.state(), BackendState::Down);
        b.set_draining(true);
        assert_eq!(b.state(), BackendState::Draining);
        assert!(!b.is_available());
    }

    #[test]
    fn consecutive_failures_reset_on_success() {
        let b = backend(3);
        assert_eq!(b.record_connect_failure(ConnectFailure::Refused), 1);
        assert_eq!(b.record_connect_failure(ConnectFailure::Timeout), 2);
        b.record_connect_success();
        assert_eq!(b.record_connect_failure(ConnectFailure::Refused), 1);
        assert_eq!(b.connect_failures(), 3);
        assert_eq!(b.connect_failures_of(ConnectFailure::Refused), 2);
    }

    #[test]
    fn label_is_name_or_address() {
        let a = BackendAddress(([127, 0, 0, 1], 9).into());
        let named = Backend::new(a, Some("api-1"), NonZeroU32::MIN, false, true);
        assert_eq!(named.label(), "api-1");
        assert_eq!(backend(9).label(), "127.0.0.1:9");
    }
}
