//! tandem's rtnetlink (NETLINK_ROUTE): look up a link by name; list, add
//! and delete a link's addresses; add, replace, list and delete the routes
//! tandem owns; and [`HostEvents`], a second socket subscribed to link and
//! address changes.
//!
//! Why libraries and not hand-written messages: the framing (netlink
//! headers, message and attribute lengths, alignment, acks, errors, the end
//! of a dump), the fixed headers (`ifinfomsg`, `ifaddrmsg`, `rtmsg`) with
//! their flag, family, protocol and scope types, and the socket come from
//! netlink-packet-core, netlink-packet-route and netlink-sys, which the
//! rust-netlink project keeps in step with the kernel. What is left here is
//! what tandem decides: which requests, which flags, which errno means
//! "already there" or "not there", and how much of an answer to trust.
//!
//! Where the libraries fall short (tandem works around each here):
//! - netlink-packet-route's catch-all types match on every message and
//!   attribute it knows: `RouteNetlinkMessage`'s emitter and `LinkAttribute`'s
//!   parser alone linked about 460 KB into the release binary (+11.5%
//!   stripped), against a budget of 5% for the whole move to libraries. So
//!   requests are the fixed header plus attributes behind a small
//!   `NetlinkSerializable` (`request::Request`): `AddressAttribute` for
//!   addresses, whose code is small, and plain `DefaultNla`s for IFLA_IFNAME
//!   and the route attributes (tests check the bytes against what
//!   `LinkMessage` and `RouteMessage` write). Answers are read attribute by
//!   attribute, by type, with netlink-packet-core's `parse_mac`, `parse_ip`
//!   and `parse_u32`.
//! - a message parses all or nothing: one attribute the library cannot read
//!   would hide the whole link, address or route. Reading by type skips
//!   values that do not parse instead.
//! - `ErrorMessage::to_io` takes `abs()` of the errno, which overflows on
//!   `i32::MIN` (a panic with debug assertions); the verdict is computed here.
//! - netlink-sys has no receive timeout (socket2 sets SO_RCVTIMEO on its
//!   descriptor) and no multicast group constants (libc's `RTNLGRP_*`); tokio's
//!   safe `AsyncFd` constructors are deprecated, so `sys` registers the event
//!   socket in one `unsafe` call.
//!
//! Key types: [`Netlink`] (the blocking request socket), [`Link`],
//! [`Address`], [`Route`], [`HostEvents`] (async, tokio) and [`HostEvent`].
//!
//! Invariants:
//! - every call returns within 2 × [`TIMEOUT`], whatever the kernel sends
//!   or does not send, and parsing never panics or loops on any bytes:
//!   a message or attribute with a broken length ends its list, and an
//!   attribute value that does not parse is skipped, so one odd attribute
//!   cannot hide a link, an address or a route;
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
//! Calls block: the kernel answers these in microseconds, so callers make
//! them on their task.

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

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
