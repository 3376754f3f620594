//! Health checks: active probes of every backend, the rise/fall verdict, and
//! passive ejection on connect failures.
//!
//! A [`Checker`] per service runs one task per backend. Each task probes on
//! the service's `interval` (a random first offset, then ±10 % jitter) within
//! `timeout`, feeds the result to a pure rise/fall [`Machine`], and writes the
//! verdict into the backend's atomic with `Backend::set_up`; schedulers read
//! `Backend::is_available` and never talk to this crate. Probe types: `tcp`
//! (connect), `http`/`https` (a hand-written HTTP/1.1 GET; rustls for TLS,
//! with close_notify before closing), `udp` (send, expect a reply or at least
//! no ICMP refusal) and `none` (nothing runs).
//!
//! Key types: [`Checker`] (built from the validated `Health` config; `run`
//! until cancelled), [`Handle`] (reload with [`Handle::update`], [`Handle::subscribe`]
//! to [`Transition`]s, [`Handle::last_results`] as [`ProbeReport`]s, a
//! [`ProbeObserver`] hook for metrics), [`Prober`] (one probe, no state),
//! [`Machine`] (rise/fall, no I/O, no clock), [`ProbeFailure`] (why a probe
//! failed, typed), [`HealthMetrics`] (this crate's metrics, registered by
//! it) and [`HealthError`] (a TLS file that
//! cannot be used, returned by `new`/`update`, never a panic).
//!
//! Invariants:
//! - a backend flips only after `rise` consecutive successes or `fall`
//!   consecutive failures, and every flip is logged exactly once (warn for
//!   down, info for up) and published exactly once on the subscription;
//! - an up flag changed behind the checker's back (passive ejection by the
//!   listener) is noticed before and after each probe, logged and published
//!   once, and the backend needs `rise` fresh successes to come back; a probe
//!   that was in flight during the ejection does not count;
//! - a backend that stays across [`Handle::update`] (the same `Arc<Backend>`)
//!   keeps its state and count; new backends start at `initial`;
//! - a probe never takes longer than `timeout`, and runs on its own task:
//!   nothing here blocks the data path or holds a lock across an await.
//!
//! This crate must not: install signal handlers, touch the process, depend on
//! scheduler, forward, listener or vrrp (it meets them only through the
//! atomics in `tandem-core` and the transition channel), register metrics
//! itself, send traffic anywhere but the configured backends, or `unwrap()`
//! outside tests.

mod checker;
mod eject;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod jitter;
mod machine;
mod metrics;
mod probe;
mod tls;

pub use checker::{Checker, Handle, ProbeObserver, ProbeReport, Transition};
pub use error::HealthError;
pub use machine::{Machine, Thresholds};
pub use metrics::HealthMetrics;
pub use probe::{Outcome, Phase, ProbeFailure, Prober};

#[cfg(test)]
mod testing {
    use tandem_config::{Health, HealthKind};

    /// A `Health` as the config crate would default it for `kind`.
    pub(crate) fn health(kind: HealthKind) -> Health {
        Health::defaults(kind)
    }
}
