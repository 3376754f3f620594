//! `tandem run`: load, bind, serve, reload, and shut down in order.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use tandem_config::Config;
use tandem_core::{ListenAddress, Protocol};
use tandem_forward::Forwarder;
use tandem_listener::{
    drain_then_cut, ListenerMetrics, ServiceState, Services, TcpAcceptor, UdpAcceptor,
};
use tandem_metrics::{Access, AdminApi, AdminServer, ApiError, Status};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::sd_notify::notify;

/// How long cut connections get to finish closing before the process exits.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// Where the running configuration came from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file: SIGHUP and `POST /reload` read it again.
    File(PathBuf),
    /// Built in (the demo): nothing to reload.
    Embedded(String),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Embedded(n) => n.clone(),
        }
    }
}

pub fn run_file(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match tandem_config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                error!("{e}");
            }
            bail!(
                "{}: {} configuration error(s), not started (see `tandem check -c {}`)",
                path.display(),
                errors.0.len(),
                path.display()
            );
        }
    };
    raise_open_file_limit();
    let runtime = runtime(&config)?;
    runtime.block_on(serve(config, Source::File(path.to_owned()), None))?;
    Ok(ExitCode::SUCCESS)
}

/// One worker thread (set, or the default on a one-CPU host) is tokio's
/// current-thread runtime: every task on the thread that runs the daemon,
/// with no work-stealing queues and no wakeups across threads (as HAProxy's
/// `nbthread 1` or nginx's one worker).
pub fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = config.runtime.worker_threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.get(),
    );
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .thread_name("tandem-worker")
        .build()
        .context("cannot start the async runtime")
}

/// A proxy holds two descriptors per connection (more while splicing): use the
/// whole hard limit, as HAProxy and nginx do.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 4096 => {
            warn!(
                limit = n,
                "open file limit is low; each connection needs 2-4 descriptors"
            )
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open file limit"),
    }
}

/// A bound listening socket of either protocol.
enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn bind(service: &tandem_config::Service) -> Result<Bound, tandem_listener::BindError> {
    match service.protocol {
        Protocol::Tcp => tandem_listener::bind_tcp(service.listen).map(Bound::Tcp),
        Protocol::Udp => tandem_listener::bind_udp(service.listen).map(Bound::Udp),
    }
}

/// One service as the daemon runs it.
struct RunningService {
    state: Arc<ServiceState>,
    listen: ListenAddress,
    protocol: Protocol,
    stop: CancellationToken,
    cut: CancellationToken,
    acceptor: JoinHandle<()>,
    health: tandem_health::Handle,
    health_stop: CancellationToken,
}

/// What reload replaces; guarded by one async mutex, which serialises reloads.
struct Running {
    config: Config,
    services: Vec<RunningService>,
}

struct ReloadMetrics {
    total: IntCounterVec,
    last_success: IntGauge,
}

impl ReloadMetrics {
    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let total = IntCounterVec::new(
            Opts::new(
                "tandem_config_reloads_total",
                "Configuration reloads, by result (success, failure).",
            ),
            &["result"],
        )?;
        let last_success = IntGauge::new(
            "tandem_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load (start or reload).",
        )?;
        registry.register(Box::new(total.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        // Both results exist from the start, so rate() and alerts see zeros.
        total.with_label_values(&["success"]);
        total.with_label_values(&["failure"]);
        Ok(ReloadMetrics {
            total,
            last_success,
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The running process: everything the admin endpoint and reload reach.
pub struct Daemon {
    source: Source,
    forwarder: Forwarder,
    tracker: TaskTracker,
    cut_all: CancellationToken,
    listener_metrics: ListenerMetrics,
    health_durations: HistogramVec,
    health_handles: Mutex<HashMap<String, tandem_health::Handle>>,
    /// Woken by every health transition, for VRRP tracking.
    health_changed: Arc<tokio::sync::Notify>,
    vrrp: Option<tandem_vrrp::VrrpHandle>,
    vrrp_config: Vec<tandem_config::VrrpInstance>,
    services: Arc<Services>,
    running: tokio::sync::Mutex<Running>,
    reload_metrics: ReloadMetrics,
    reload_status: Mutex<tandem_metrics::ReloadStatus>,
    started: Instant,
    ready: AtomicBool,
}

impl Daemon {
    /// Builds the health checker of a service; fails only on unreadable TLS files.
    fn checker(&self, state: &ServiceState) -> Result<tandem_health::Checker, String> {
        let snapshot = state.snapshot.load();
        let checker = tandem_health::Checker::new(
            state.name.clone(),
            &snapshot.config.health,
            snapshot.backends.as_slice().to_vec(),
        )
        .map_err(|e| format!("service {}: health: {e}", state.name))?;
        let durations = self.health_durations.clone();
        checker.handle().set_probe_observer(Some(Arc::new(
            move |report: &tandem_health::ProbeReport| {
                durations
                    .with_label_values(&[report.service.as_str(), report.backend.as_str()])
                    .observe(report.duration.as_secs_f64());
            },
        )));
        Ok(checker)
    }

    fn start_acceptor(
        &self,
        state: Arc<ServiceState>,
        bound: Bound,
        checker: tandem_health::Checker,
    ) -> anyhow::Result<RunningService> {
        let config = state.snapshot.load().config.clone();
        let stop = CancellationToken::new();
        let cut = self.cut_all.child_token();
        let context = || format!("service {}: cannot register listener", config.name);
        let task = match bound {
            Bound::Tcp(listener) => {
                let acceptor = TcpAcceptor {
                    service: Arc::clone(&state),
                    listener: TcpListener::from_std(listener).with_context(context)?,
                    forwarder: self.forwarder.clone(),
                    tracker: self.tracker.clone(),
                    cut: cut.clone(),
                };
                tokio::spawn(acceptor.run(stop.clone()))
            }
            Bound::Udp(socket) => {
                let sender = socket.try_clone().with_context(context)?;
                let acceptor = UdpAcceptor {
                    service: Arc::clone(&state),
                    socket: Arc::new(UdpSocket::from_std(socket).with_context(context)?),
                    sender: Arc::new(sender),
                    tracker: self.tracker.clone(),
                    cut: cut.clone(),
                };
                tokio::spawn(acceptor.run(stop.clone()))
            }
        };
        info!(
            service = %config.name,
            listen = %config.listen,
            backends = config.backends.len(),
            scheduler = config.scheduler.as_str(),
            "listening"
        );
        let health = checker.handle();
        let health_stop = CancellationToken::new();
        let mut transitions = checker.subscribe();
        let changed = Arc::clone(&self.health_changed);
        let stop_forwarding = health_stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop_forwarding.cancelled() => break,
                    received = transitions.recv() => match received {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => changed.notify_one(),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        });
        tokio::spawn(checker.run(health_stop.clone()));
        Ok(RunningService {
            state,
            listen: config.listen,
            protocol: config.protocol,
            stop,
            cut,
            acceptor: task,
            health,
            health_stop,
        })
    }

    fn publish(&self, running: &Running) {
        self.services.store(
            running
                .services
                .iter()
                .map(|s| Arc::clone(&s.state))
                .collect(),
        );
        *self
            .health_handles
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = running
            .services
            .iter()
            .map(|s| (s.state.name.clone(), s.health.clone()))
            .collect();
    }

    /// Reads the file again and applies the difference; all or nothing.
    pub async fn reload(&self) -> Result<String, String> {
        let mut running = self.running.lock().await;
        let Source::File(path) = &self.source else {
            return Err("this configuration is built in; there is no file to reload".to_owned());
        };
        notify("RELOADING=1");
        let result = self.apply(&mut running, path).await;
        notify("READY=1");
        let mut status = self.reload_status.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(summary) => {
                self.reload_metrics
                    .total
                    .with_label_values(&["success"])
                    .inc();
                self.reload_metrics.last_success.set(unix_now() as i64);
                status.reloads_ok += 1;
                status.last_success_unix = unix_now();
                status.last_error = None;
                info!("reload: {summary}");
            }
            Err(e) => {
                self.reload_metrics
                    .total
                    .with_label_values(&["failure"])
                    .inc();
                status.reloads_failed += 1;
                status.last_error = Some(e.clone());
                error!("reload failed, still running the previous configuration: {e}");
            }
        }
        result
    }

    async fn apply(&self, running: &mut Running, path: &Path) -> Result<String, String> {
        let new = tandem_config::load(path).map_err(|e| e.to_string())?;
        if new.runtime != running.config.runtime {
            warn!("reload: runtime settings change only at restart");
        }
        if new.admin != running.config.admin {
            warn!("reload: admin settings change only at restart");
        }
        if new.vrrp != running.config.vrrp {
            warn!("reload: vrrp settings change only at restart");
        }

        // Everything that can fail comes first: TLS files of health checks...
        for service in &new.services {
            tandem_health::Prober::new(&service.health)
                .map_err(|e| format!("service {}: health: {e}", service.name))?;
        }
        // ...and every listener the new file needs.
        let mut fresh = HashMap::new();
        for service in &new.services {
            let kept = running.services.iter().any(|r| {
                r.state.name == service.name
                    && r.listen == service.listen
                    && r.protocol == service.protocol
            });
            if kept {
                continue;
            }
            let taken_by_us = running
                .services
                .iter()
                .find(|r| r.listen == service.listen && r.protocol == service.protocol);
            if let Some(other) = taken_by_us {
                return Err(format!(
                    "service {}: {} is still used by service {} in the running configuration; rename in one reload, move in another",
                    service.name, service.listen, other.state.name
                ));
            }
            // Off the runtime thread: a port clash looks for the process that
            // holds the port through /proc, which can take long on a busy host,
            // and with `worker_threads: 1` that thread is the data path.
            let owned = service.clone();
            let listener = tokio::task::spawn_blocking(move || bind(&owned))
                .await
                .map_err(|e| format!("service {}: {e}", service.name))?
                .map_err(|e| format!("service {}: {e}", service.name))?;
            fresh.insert(service.name.clone(), listener);
        }

        // Nothing can fail from here on.
        let mut summary = Summary::default();
        // Acceptors told to stop; awaited before the reload returns, so that a
        // removed or moved address no longer accepts once the reload reports.
        let mut stopping = Vec::new();
        let mut old: HashMap<String, RunningService> = running
            .services
            .drain(..)
            .map(|r| (r.state.name.clone(), r))
            .collect();
        for service in &new.services {
            let previous = old.remove(&service.name);
            match (previous, fresh.remove(&service.name)) {
                (Some(kept), None) => {
                    if kept.state.snapshot.load().config != *service {
                        summary.updated.push(service.name.clone());
                    }
                    kept.state.update(service.clone());
                    update_health(&kept);
                    running.services.push(kept);
                }
                (Some(moved), Some(listener)) => {
                    // Same service, new address: keep its counters and backends;
                    // its open connections keep flowing, never cut by the move.
                    moved.stop.cancel();
                    let mut moved = moved;
                    stopping.push(std::mem::replace(
                        &mut moved.acceptor,
                        tokio::spawn(async {}),
                    ));
                    moved.state.update(service.clone());
                    update_health(&moved);
                    summary.moved.push(format!(
                        "{} ({} -> {})",
                        service.name, moved.listen, service.listen
                    ));
                    let checker = self.checker(&moved.state);
                    moved.health_stop.cancel();
                    match checker
                        .map_err(anyhow::Error::msg)
                        .and_then(|c| self.start_acceptor(Arc::clone(&moved.state), listener, c))
                    {
                        Ok(r) => running.services.push(r),
                        Err(e) => error!("{e:#}"),
                    }
                }
                (None, Some(listener)) => {
                    let state = ServiceState::new(
                        service.clone(),
                        self.listener_metrics.duration_of(&service.name),
                    );
                    summary.added.push(service.name.clone());
                    match self
                        .checker(&state)
                        .map_err(anyhow::Error::msg)
                        .and_then(|c| self.start_acceptor(state, listener, c))
                    {
                        Ok(r) => running.services.push(r),
                        Err(e) => error!("{e:#}"),
                    }
                }
                (None, None) => unreachable!("a new service is either kept or freshly bound"),
            }
        }
        for (name, removed) in old {
            removed.stop.cancel();
            removed.health_stop.cancel();
            drain_then_cut(&removed.state, removed.cut.clone());
            stopping.push(removed.acceptor);
            summary.removed.push(name);
        }
        for acceptor in stopping {
            if tokio::time::timeout(Duration::from_secs(2), acceptor)
                .await
                .is_err()
            {
                warn!("an acceptor did not stop within 2s");
            }
        }
        running.config = new;
        self.publish(running);
        Ok(summary.to_string())
    }

    /// Stops accepting everywhere, drains, cuts what is left; returns how many were cut.
    async fn shutdown(&self, signals: &mut Signals) -> u64 {
        let mut running = self.running.lock().await;
        for r in &running.services {
            r.stop.cancel();
        }
        for r in running.services.iter_mut() {
            let _ = (&mut r.acceptor).await;
            r.health_stop.cancel();
        }
        for r in &running.services {
            drain_then_cut(&r.state, r.cut.clone());
        }
        let longest_drain = running
            .config
            .services
            .iter()
            .map(|s| s.drain_timeout)
            .max()
            .unwrap_or_default();
        self.tracker.close();
        tokio::select! {
            () = self.tracker.wait() => {}
            () = tokio::time::sleep(longest_drain + CUT_GRACE) => {}
            name = signals.stop() => {
                warn!(signal = name, "second signal: exiting at once");
                std::process::exit(1);
            }
        }
        self.cut_all.cancel();
        let _ = tokio::time::timeout(CUT_GRACE, self.tracker.wait()).await;
        // Services removed by earlier reloads count too: the list holds only current ones.
        running
            .services
            .iter()
            .map(|r| r.state.counters.cut_at_drain.load(Relaxed))
            .sum()
    }
}

/// Points a running checker at the service's new snapshot: backends that stay
/// keep their health state, new ones start at `initial`.
fn update_health(service: &RunningService) {
    let snapshot = service.state.snapshot.load();
    if let Err(e) = service.health.update(
        &snapshot.config.health,
        snapshot.backends.as_slice().to_vec(),
    ) {
        error!(service = %service.state.name, error = %e, "health settings not applied");
    }
}

#[derive(Default)]
struct Summary {
    added: Vec<String>,
    removed: Vec<String>,
    updated: Vec<String>,
    moved: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (what, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("updated", &self.updated),
            ("moved", &self.moved),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        }
        if parts.is_empty() {
            f.write_str("no change")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

impl AdminApi for Daemon {
    fn ready(&self) -> Result<(), String> {
        if self.ready.load(Relaxed) {
            Ok(())
        } else {
            Err("starting: listeners not bound yet".to_owned())
        }
    }

    fn status(&self) -> Status {
        status_of(self)
    }

    fn set_draining(&self, service: &str, backend: &str, draining: bool) -> Result<(), ApiError> {
        let state = self
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
        Ok(())
    }

    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(Daemon::reload(self))
    }
}

fn status_of(daemon: &Daemon) -> Status {
    let handles = daemon
        .health_handles
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let now = SystemTime::now();
    let services = daemon
        .services
        .load()
        .iter()
        .map(|state| {
            let snapshot = state.snapshot.load();
            let c = &snapshot.config;
            let reports = handles
                .get(&state.name)
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
        reload: daemon
            .reload_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        services,
        vrrp: daemon
            .vrrp
            .as_ref()
            .map(|v| {
                v.status()
                    .into_iter()
                    .map(|i| tandem_metrics::VrrpStatus {
                        virtual_ips: daemon
                            .vrrp_config
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
    }
}

/// Keeps each VRRP instance's tracking in step with its services' health: a
/// tracked service with no healthy backend lowers the priority by `weight`.
async fn track_services(
    daemon: Arc<Daemon>,
    vrrp: tandem_vrrp::VrrpHandle,
    stop: CancellationToken,
) {
    // Transitions wake this at once; the tick also catches passive ejections
    // and reloads, which publish no transition of their own right away.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        for state in daemon.services.load().iter() {
            let healthy = state.snapshot.load().backends.iter().any(|b| b.is_up());
            vrrp.set_tracked_down(&state.name, !healthy);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = daemon.health_changed.notified() => {}
            _ = tick.tick() => {}
        }
    }
}

fn read_token(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(path) = config.admin.as_ref().and_then(|a| a.token_file.as_ref()) else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("admin.token_file {}", path.display()))?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("admin.token_file {} is empty", path.display());
    }
    Ok(Some(token))
}

/// Serves `config` until SIGTERM or SIGINT (or `until`), then drains.
pub async fn serve(
    config: Config,
    source: Source,
    until: Option<CancellationToken>,
) -> anyhow::Result<()> {
    let token = read_token(&config)?;

    // Bind everything before accepting anything: a port clash stops the start
    // with every clash named, not after half the services came up.
    let mut bound = Vec::new();
    let mut failures = Vec::new();
    for service in &config.services {
        match bind(service) {
            Ok(l) => bound.push((service.clone(), l)),
            Err(e) => failures.push(format!("service {}: {e}", service.name)),
        }
    }
    let admin_listener = match &config.admin {
        Some(admin) => match std::net::TcpListener::bind(admin.listen) {
            Ok(l) => Some(l),
            Err(e) => {
                failures.push(format!("admin endpoint {}: {e}", admin.listen));
                None
            }
        },
        None => None,
    };
    if !failures.is_empty() {
        for f in &failures {
            error!("{f}");
        }
        bail!(
            "{} listener(s) could not be bound, not started",
            failures.len()
        );
    }

    let registry = tandem_metrics::registry();
    let services = Services::new();
    let forwarder = Forwarder::new();
    let listener_metrics =
        ListenerMetrics::register(&registry, Arc::clone(&services), forwarder.clone())
            .context("cannot register listener metrics")?;
    let reload_metrics =
        ReloadMetrics::register(&registry).context("cannot register reload metrics")?;
    let vrrp = if config.vrrp.instances.is_empty() {
        None
    } else {
        Some(
            tandem_vrrp::Vrrp::new(&config.vrrp.instances, &registry)
                .map_err(|e| anyhow::anyhow!("vrrp: {e}"))?,
        )
    };
    let health_durations = HistogramVec::new(
        HistogramOpts::new(
            "tandem_health_check_duration_seconds",
            "How long health probes took, successful or not.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["service", "backend"],
    )
    .context("health histogram")?;
    registry
        .register(Box::new(health_durations.clone()))
        .context("cannot register health metrics")?;
    reload_metrics.last_success.set(unix_now() as i64);

    let daemon = Arc::new(Daemon {
        source: source.clone(),
        forwarder,
        tracker: TaskTracker::new(),
        cut_all: CancellationToken::new(),
        listener_metrics,
        health_durations,
        health_handles: Mutex::new(HashMap::new()),
        health_changed: Arc::new(tokio::sync::Notify::new()),
        vrrp: vrrp.as_ref().map(tandem_vrrp::Vrrp::handle),
        vrrp_config: config.vrrp.instances.clone(),
        services,
        running: tokio::sync::Mutex::new(Running {
            config: config.clone(),
            services: Vec::new(),
        }),
        reload_metrics,
        reload_status: Mutex::new(tandem_metrics::ReloadStatus {
            last_success_unix: unix_now(),
            ..Default::default()
        }),
        started: Instant::now(),
        ready: AtomicBool::new(false),
    });
    {
        let mut running = daemon.running.lock().await;
        for (service, listener) in bound {
            let state = ServiceState::new(
                service.clone(),
                daemon.listener_metrics.duration_of(&service.name),
            );
            let checker = daemon.checker(&state).map_err(anyhow::Error::msg)?;
            running
                .services
                .push(daemon.start_acceptor(state, listener, checker)?);
        }
        daemon.publish(&running);
    }

    // Listeners are bound (the VIPs with IP_FREEBIND) before VRRP may take the
    // VIPs, so a node serves the moment it becomes master.
    let vrrp_stop = CancellationToken::new();
    let vrrp_task = vrrp.map(|v| {
        let handle = v.handle();
        tokio::spawn(track_services(
            Arc::clone(&daemon),
            handle,
            vrrp_stop.clone(),
        ));
        tokio::spawn(v.run(vrrp_stop.clone()))
    });

    let admin_stop = CancellationToken::new();
    let admin_task = match (admin_listener, &config.admin) {
        (Some(listener), Some(admin)) => {
            listener.set_nonblocking(true)?;
            let server = AdminServer {
                listener: TcpListener::from_std(listener)?,
                registry,
                api: Arc::clone(&daemon),
                access: Access::for_listener(admin.listen, token),
            };
            Some(tokio::spawn(server.run(admin_stop.clone())))
        }
        _ => None,
    };

    daemon.ready.store(true, Relaxed);
    notify("READY=1");
    info!(config = %source.name(), services = config.services.len(), "tandem started");

    let mut signals = Signals::new()?;
    // SIGHUP reloads; a burst of them is coalesced by the signal stream and
    // reloads are serialised by the daemon's lock.
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let until = until.unwrap_or_default();
    loop {
        tokio::select! {
            name = signals.stop() => { info!(signal = name, "shutting down: no new connections"); break; }
            () = until.cancelled() => { info!("shutting down: no new connections"); break; }
            _ = hangup.recv() => {
                info!("SIGHUP received: reloading");
                let _ = daemon.reload().await;
            }
        }
    }

    notify("STOPPING=1");
    // VRRP resigns first (priority 0: a backup takes over at once), then the
    // listeners stop and connections drain.
    vrrp_stop.cancel();
    if let Some(task) = vrrp_task {
        if tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .is_err()
        {
            warn!("vrrp did not stop within 3s");
        }
    }
    let cut = daemon.shutdown(&mut signals).await;
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    info!(cut_connections = cut, "stopped");
    Ok(())
}

struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// The next SIGTERM or SIGINT; returns its name.
    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
