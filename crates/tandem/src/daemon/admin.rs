//! The daemon as the admin endpoint sees it: readiness, the status table,
//! drain/enable, maintenance and reload (`tandem_metrics::AdminApi`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use tandem_core::Protocol;
use tandem_metrics::{AdminApi, ApiError, NotReady, Status};

use super::{Daemon, ReloadError};

impl AdminApi for Daemon {
    type ReloadError = ReloadError;

    fn ready(&self) -> Result<(), NotReady> {
        if self.ready.load(Relaxed) {
            Ok(())
        } else {
            Err(NotReady::Starting)
        }
    }

    fn status(&self) -> Status {
        status_of(self)
    }

    fn set_draining(&self, service: &str, backend: &str, draining: bool) -> Result<(), ApiError> {
        let state = self
            .published
            .services
            .find(service)
            .ok_or_else(|| ApiError::NotFound(format!("no service `{service}`")))?;
        let snapshot = state.snapshot.load();
        let found = snapshot
            .backends
            .iter()
            .find(|b| b.label() == backend || b.address().to_string() == backend)
            .ok_or_else(|| {
                ApiError::NotFound(format!("service `{service}` has no backend `{backend}`"))
            })?;
        found.set_draining(draining);
        // Routed VIPs follow drains at once, not at the next tick.
        self.published.health_changed.notify_one();
        Ok(())
    }

    fn set_maintenance(&self, on: bool) -> Result<(), ApiError> {
        let routing = self.routing.as_ref().ok_or_else(|| {
            ApiError::NotFound(
                "no routing section: maintenance withdraws routed VIPs, and there are none"
                    .to_owned(),
            )
        })?;
        routing.set_maintenance(on);
        Ok(())
    }

    async fn reload(&self) -> Result<String, ReloadError> {
        Daemon::reload(self).await.map(|diff| diff.to_string())
    }
}

fn status_of(daemon: &Daemon) -> Status {
    let checks = daemon.published.checks.load();
    let now = SystemTime::now();
    let services = daemon
        .published
        .services
        .load()
        .iter()
        .map(|state| {
            let snapshot = state.snapshot.load();
            let c = &snapshot.config;
            let reports = checks
                .iter()
                .find(|h| h.service() == state.name)
                .map(|h| h.last_results())
                .unwrap_or_default();
            tandem_metrics::ServiceStatus {
                name: c.name.clone(),
                protocol: c.protocol.to_string(),
                listen: c.listen.to_string(),
                scheduler: c.scheduler.as_str().to_owned(),
                active: state.counters.active.load(Relaxed),
                udp_sessions: (c.protocol == Protocol::Udp)
                    .then(|| state.counters.udp.sessions_active.load(Relaxed)),
                backends: snapshot
                    .backends
                    .iter()
                    .map(|b| tandem_metrics::BackendStatus {
                        name: b.label().to_owned(),
                        address: b.address().to_string(),
                        state: b.state().to_string(),
                        weight: b.weight().get(),
                        backup: b.is_backup(),
                        active: b.active_connections(),
                        total: b.total_connections(),
                        bytes_in: b.bytes_from_client(),
                        bytes_out: b.bytes_to_client(),
                        last_check: reports.iter().find(|r| r.backend == b.label()).map(|r| {
                            tandem_metrics::CheckStatus {
                                ok: r.ok,
                                detail: r.reason.clone(),
                                seconds_ago: now.duration_since(r.at).map_or(0, |d| d.as_secs()),
                                duration_ms: r.duration.as_millis() as u64,
                            }
                        }),
                    })
                    .collect(),
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config_file: daemon.source.name(),
        uptime_seconds: daemon.started.elapsed().as_secs(),
        reload: daemon.reloads.status(),
        services,
        vrrp: daemon
            .vrrp
            .as_ref()
            .map(|(v, vrrp_config)| {
                v.status()
                    .into_iter()
                    .map(|i| tandem_metrics::VrrpStatus {
                        virtual_ips: vrrp_config
                            .iter()
                            .find(|c| c.name == i.name)
                            .map(|c| {
                                c.virtual_ips
                                    .iter()
                                    .map(|v| format!("{}/{}", v.address, v.prefix_len))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        instance: i.name,
                        interface: i.interface,
                        state: i.state.as_str().to_owned(),
                        priority: u32::from(i.priority),
                        master: i.master.map(|m| m.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        routing: daemon
            .routing
            .as_ref()
            .map(|r| {
                r.status()
                    .into_iter()
                    .map(|v| tandem_metrics::RouteStatus {
                        vip: v.address.to_string(),
                        services: v.services,
                        announced: v.installed,
                        reason: v.verdict.reason(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        maintenance: daemon.routing.as_ref().is_some_and(|r| r.maintenance()),
    }
}
