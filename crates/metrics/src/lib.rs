//! tandem's metrics registry and admin HTTP endpoint.
//!
//! [`registry`] makes the Prometheus registry every component registers its own
//! metric families into (plus process metrics). [`AdminServer`] serves it on
//! `admin.listen` (on hyper's HTTP/1.1 server) with `/metrics`, `/healthz`,
//! `/readyz`, `/status` (JSON by serde, or a table for `tandem status`), the
//! status page at `/` and the runtime API (drain, enable, reload), behind
//! [`AdminApi`], which the binary implements with its own reload error.
//!
//! Invariants: mutating endpoints are refused unless the listener is on
//! loopback or the request carries the configured bearer token; requests are
//! bounded in size and time. This crate knows no services or backends: it asks
//! the [`AdminApi`].

mod admin;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod page;
mod status;

pub use admin::{Access, AdminApi, AdminServer, ApiError, NotReady};
pub use status::{
    human_bytes, BackendStatus, CheckStatus, ReloadStatus, RouteStatus, ServiceStatus, Status,
    VrrpStatus,
};

use prometheus::Registry;

/// A registry with the process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, open fds, …) already in it.
pub fn registry() -> Registry {
    let registry = Registry::new();
    let process = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(process)) {
        tracing::warn!(error = %e, "process metrics unavailable");
    }
    registry
}
