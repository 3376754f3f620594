//! tandem's shared vocabulary, std only.
//!
//! Everything the other crates must agree on lives here and nothing else does:
//! the address newtypes ([`ListenAddress`], [`BackendAddress`]), [`Protocol`], and
//! the [`Backend`] whose atomics (up, draining, active connections, counters) are
//! where health checks, schedulers, listeners and metrics meet without importing
//! each other; and the per-service policies ([`SchedulerKind`], [`HashKey`],
//! [`OnAllDown`], [`Forwarding`], [`ProxyVersion`]) that config parses and the scheduler and
//! forwarder act on.
//!
//! Invariants: a [`Backend`] is shared as `Arc<Backend>` and is only ever mutated
//! through atomics, so the accept path never takes a lock; the active-connection
//! count is only changed through [`ActiveConnection`], whose `Drop` gives it back.
//! This crate must not depend on tokio, serde or anything outside std.

mod address;
mod backend;
mod policy;

pub use address::{BackendAddress, ListenAddress, Protocol, ProtocolParseError};
pub use backend::{ActiveConnection, Backend, BackendSet, BackendState, ConnectFailure};
pub use policy::{Forwarding, HashKey, OnAllDown, ProxyVersion, SchedulerKind};
