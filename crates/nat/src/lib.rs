//! The kernel data path of `forwarding: nat` services.
//!
//! tandem still owns such a service's configuration, scheduling policy,
//! health, drains, VRRP tracking, metrics and reload, but packets never reach
//! its sockets: the kernel translates them with nftables rules in one table
//! that tandem owns, `table inet tandem` ([`TABLE`]). A connection to the
//! service's address is DNATed to a backend picked by `numgen` (round robin,
//! random) or `jhash` (source hash) over a map of the backends that are up and
//! not draining, weighted by slots; the reply comes back through the node
//! because the flow is also masqueraded (SNAT) on its way out. Conntrack keeps
//! each flow's translation, so established flows survive a rewrite of the
//! table, a kill of tandem and a restart; drained or removed backends keep
//! their flows until they end.
//!
//! Key pieces: [`render`] writes the whole table as one `nft -f` transaction
//! (pure, golden-tested); [`slots`] turns weights into the map's slots;
//! [`Nft`] runs the `nft` program (check, apply, delete, read counters).
//!
//! Invariants: every transaction starts by creating and deleting the table, so
//! applying it replaces whatever was there (a stale table from a killed run
//! included) atomically, and a failed one leaves the old table untouched; no
//! rule outside [`TABLE`] is ever written or removed. This crate must not run
//! `nft` on its own: the caller decides when (off the async runtime's threads,
//! since `nft` is a blocking child process).

mod counters;
mod nft;
mod render;
pub mod slots;

pub use counters::{BackendCounters, Counters};
pub use nft::{NatError, Nft};
pub use render::{
    render, render_config, render_delete, Backend, CounterName, Rendered, Service, TABLE,
};
