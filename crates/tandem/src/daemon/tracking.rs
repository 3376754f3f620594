//! Tracking glue: health, vrrp and routing do not import each other, so the
//! binary tells each VRRP instance which of its tracked services have no
//! healthy backend (the instance lowers its priority by `weight`), and the
//! routing component which services have an available one (up and not
//! draining: a VIP is announced only while all it follows have one).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::supervisor::Published;

/// Runs until `stop`: on every health transition and drain at once, and
/// every second for passive ejections and reloads, which publish no
/// transition right away.
pub(super) async fn track_services(
    published: Arc<Published>,
    vrrp: Option<tandem_vrrp::VrrpHandle>,
    routing: Option<tandem_routing::RoutingHandle>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut known: Vec<String> = Vec::new();
    loop {
        let services = published.services.load();
        for state in services.iter() {
            let backends = &state.snapshot.load().backends;
            if let Some(vrrp) = &vrrp {
                let healthy = backends.iter().any(|b| b.is_up());
                vrrp.set_tracked_down(&state.name, !healthy);
            }
            if let Some(routing) = &routing {
                routing
                    .set_service_available(&state.name, backends.iter().any(|b| b.is_available()));
            }
        }
        // A service a reload removed has no backend at all now.
        if let Some(routing) = &routing {
            for gone in known
                .iter()
                .filter(|n| !services.iter().any(|s| &s.name == *n))
            {
                routing.set_service_available(gone, false);
            }
            known = services.iter().map(|s| s.name.clone()).collect();
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = published.health_changed.notified() => {}
            _ = tick.tick() => {}
        }
    }
}
