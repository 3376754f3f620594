//! tandem's rtnetlink (NETLINK_ROUTE): look up a link by name; list, add
//! and delete a link's addresses; add, replace, list and delete the routes
//! tandem owns; and [`HostEvents`], a second socket subscribed to link and
//! address changes.
//!
//! Why libraries and not hand-written messages: the wire formats (netlink
//! headers, `ifinfomsg`, `rtmsg`, their attributes and alignment) come from
//! netlink-packet-core and netlink-packet-route, and the socket from
//! netlink-sys, which are kept in step with the kernel by the rust-netlink
//! project. What is left here is what tandem decides: which requests, which
//! flags, which errno means "already there" or "not there", and how much of
//! an answer to trust.
//!
//! Key types: [`Netlink`] (the blocking request socket), [`Link`],
//! [`Address`], [`Route`], [`HostEvents`] (async, tokio) and [`HostEvent`].
//!
//! Invariants:
//! - every call returns within about [`TIMEOUT`], whatever the kernel sends
//!   or does not send, and parsing never panics or loops on any bytes:
//!   a message or attribute with a broken length ends its list, and an
//!   attribute the library cannot parse is skipped (the library would
//!   refuse the whole message), so one odd attribute the kernel adds
//!   cannot hide a link or a route;
//! - adding an address that is there already answers `Ok(false)`, and so does
//!   deleting an address or a route that is not there: the caller decides
//!   whose it was;
//! - answers are matched to their request by sequence number; a late answer
//!   to an earlier, timed-out request is ignored.
//!
//! What it must not do: depend on any other tandem crate (addresses are
//! `std::net` types); keep state about the host between calls; use `unsafe`
//! outside `sys` (netlink-sys holds the socket calls; `sys` registers the
//! event socket with tokio).
//!
//! Calls block for at most [`TIMEOUT`]: the kernel answers these in
//! microseconds, so callers make them on their task.

mod address;
mod events;
mod link;
mod request;
mod route;
mod sys;

use std::time::Duration;

pub use address::Address;
pub use events::{HostEvent, HostEvents};
pub use link::Link;
pub use request::Netlink;
pub use route::{Route, RouteKind, LOCAL_TABLE};

/// Longest wait for one answer of the kernel.
pub const TIMEOUT: Duration = Duration::from_secs(2);
