//! The kernel data path as a task: keeps tandem's nftables table equal to
//! what the running `forwarding: nat` services and their backends' state
//! (health, drain, weight) call for, and feeds the table's counters into the
//! backends' counters that the metrics read.
//!
//! The table is rendered from the published services on every health
//! transition, every reload and every second (drains and passive changes
//! publish no transition), and applied only when its text changed. `nft`
//! runs off the runtime's threads. A rewrite resets the table's counters, so
//! they are read (and added to the backends' totals) just before each one.
//! At a clean stop the table is deleted; a killed process leaves it, and
//! conntrack keeps its flows going, until the next start replaces it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem_config::{Config, Forwarding};
use tandem_core::BackendAddress;
use tandem_nat::{BackendCounters, CounterName, NatError, Nft, Rendered};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::supervisor::Published;

/// Whether `config` has a service the kernel forwards.
pub(super) fn wanted(config: &Config) -> bool {
    config
        .services
        .iter()
        .any(|s| s.forwarding == Forwarding::Nat)
}

pub(super) use tandem_nat::render_config;

/// Finds `nft` and asks the kernel to dry-run `config`'s table: what start,
/// reload and `tandem check` run before they change anything.
pub(super) async fn check(config: &Config) -> Result<Nft, NatError> {
    let text = render_config(config).text;
    blocking(move || {
        let nft = Nft::locate()?;
        nft.check(&text)?;
        Ok(nft)
    })
    .await
}

/// Applies `config`'s table at start: a stale table of an earlier run is
/// replaced in the same transaction.
pub(super) async fn apply_at_start(nft: &Nft, config: &Config) -> Result<(), NatError> {
    let nft = nft.clone();
    let text = render_config(config).text;
    blocking(move || nft.apply(&text)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NatError> + Send + 'static,
) -> Result<T, NatError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(NatError::Counters(format!("the nft task failed: {e}"))))
}

/// What the task keeps between rounds.
struct Kernel {
    nft: Option<Nft>,
    /// The text last applied; `None` when tandem has no table.
    applied: Option<String>,
    counters: Vec<CounterName>,
    /// What the table's counters held at the last reading (they restart
    /// from zero with every rewrite).
    last: HashMap<(String, SocketAddr), BackendCounters>,
    published: Arc<Published>,
}

/// Runs until `stop`, then deletes the table if it wrote one.
pub(super) async fn run(
    published: Arc<Published>,
    nft: Option<Nft>,
    applied: Option<Rendered>,
    stop: CancellationToken,
) {
    let mut k = Kernel {
        nft,
        counters: applied
            .as_ref()
            .map(|r| r.counters.clone())
            .unwrap_or_default(),
        applied: applied.map(|r| r.text),
        last: HashMap::new(),
        published,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = k.published.nat_changed.notified() => {}
            _ = tick.tick() => {}
        }
        k.round().await;
    }
    if k.applied.is_some() {
        k.collect().await;
        if let Some(nft) = k.nft.clone() {
            match blocking(move || nft.delete()).await {
                Ok(()) => info!("forwarding: nat: table {} removed", tandem_nat::TABLE),
                Err(e) => error!("{e}"),
            }
        }
    }
}

impl Kernel {
    fn desired(&self) -> Option<Rendered> {
        let services: Vec<_> = self
            .published
            .services
            .load()
            .iter()
            .filter_map(|state| {
                let snapshot = state.snapshot.load();
                (snapshot.config.forwarding == Forwarding::Nat).then(|| {
                    tandem_nat::Service::with_state(&snapshot.config, snapshot.backends.as_slice())
                })
            })
            .collect();
        (!services.is_empty()).then(|| tandem_nat::render(&services))
    }

    async fn round(&mut self) {
        let desired = self.desired();
        if desired.as_ref().map(|r| &r.text) == self.applied.as_ref() {
            self.collect().await;
            return;
        }
        let nft = match &self.nft {
            Some(n) => n.clone(),
            None => match Nft::locate() {
                Ok(n) => {
                    self.nft = Some(n.clone());
                    n
                }
                Err(e) => {
                    error!("{e}");
                    return;
                }
            },
        };
        // The rewrite resets the counters: take what they hold first.
        self.collect().await;
        let text = desired
            .as_ref()
            .map_or_else(tandem_nat::render_delete, |r| r.text.clone());
        match blocking(move || nft.apply(&text)).await {
            Ok(()) => {
                info!(
                    services = desired.as_ref().map_or(0, |r| r.counters.len()),
                    "forwarding: nat: table {} rewritten",
                    tandem_nat::TABLE
                );
                self.counters = desired
                    .as_ref()
                    .map(|r| r.counters.clone())
                    .unwrap_or_default();
                self.last.clear();
                self.applied = desired.map(|r| r.text);
            }
            // The old table stays: the next round tries again.
            Err(e) => error!("{e}; the previous rules stay"),
        }
    }

    /// Adds what the table counted since it was written to the backends.
    async fn collect(&mut self) {
        let (Some(nft), Some(_)) = (self.nft.clone(), &self.applied) else {
            return;
        };
        let counters = match blocking(move || nft.counters()).await {
            Ok(c) => c,
            Err(e) => {
                warn!("{e}");
                return;
            }
        };
        let services = self.published.services.load();
        for (service, backend, now) in counters.by_backend(&self.counters) {
            let key = (service.to_owned(), backend);
            let before = self.last.insert(key, now).unwrap_or_default();
            let Some(b) = services.iter().find(|s| s.name == service).and_then(|s| {
                s.snapshot
                    .load()
                    .backends
                    .find(BackendAddress(backend))
                    .cloned()
            }) else {
                continue;
            };
            b.add_kernel_flows(now.flows.saturating_sub(before.flows));
            b.add_bytes_from_client(
                now.bytes_from_client
                    .saturating_sub(before.bytes_from_client),
            );
            b.add_bytes_to_client(now.bytes_to_client.saturating_sub(before.bytes_to_client));
        }
    }
}
