//! VRRP tracking glue: health and vrrp do not import each other, so the
//! binary tells each VRRP instance which of its tracked services have no
//! healthy backend (the instance lowers its priority by `weight`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::supervisor::Published;

/// Runs until `stop`: on every health transition at once, and every second
/// for passive ejections and reloads, which publish no transition right away.
pub(super) async fn track_services(
    published: Arc<Published>,
    vrrp: tandem_vrrp::VrrpHandle,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        for state in published.services.load().iter() {
            let healthy = state.snapshot.load().backends.iter().any(|b| b.is_up());
            vrrp.set_tracked_down(&state.name, !healthy);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = published.health_changed.notified() => {}
            _ = tick.tick() => {}
        }
    }
}
