//! tandem's listeners: bind, accept, apply the service's limits, pick a backend,
//! connect with timeout and retry, and hand both sockets to the forwarder.
//!
//! Key types: [`ServiceState`] (a service's `ArcSwap<Snapshot>` and counters),
//! [`Snapshot`] (config + backends + scheduler, replaced whole), [`TcpAcceptor`]
//! (the accept loop), and [`bind_tcp`] / [`bind_udp`], whose errors explain what
//! holds a port.
//!
//! Invariants: the accept path loads the snapshot once per connection and takes
//! no lock; a connection never tries the same backend twice; the accept loop
//! survives every accept error, pausing when descriptors run out. This crate
//! installs no signal handler and never exits the process.

mod admission;
mod bind;
mod budget;
mod holder;
mod metrics;
mod recvmmsg;
mod service;
mod tcp;
mod udp;

pub use admission::{allowed, source_of, Refusal, Refusals, SourceGuard, SourceTable};
pub use bind::{bind_tcp, bind_udp, BindError};
pub use budget::{BudgetGuard, SessionBudget, DAEMON_RESERVE};
pub use holder::PortHolder;
pub use metrics::ListenerMetrics;
pub use service::{ServiceCounters, ServiceState, Services, Snapshot, UdpCounters};
pub use tcp::{drain_then_cut, TcpAcceptor};
pub use udp::UdpAcceptor;
