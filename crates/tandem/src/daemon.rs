//! `tandem run`: load, bind, serve, and shut down in order.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_config::{Config, HealthKind};
use tandem_core::Protocol;
use tandem_forward::Forwarder;
use tandem_listener::{ServiceState, TcpAcceptor};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// How long cut connections get to finish closing before the process exits.
const CUT_GRACE: Duration = Duration::from_secs(2);

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
    run_config(config, path.display().to_string())
}

/// Builds the runtime the configuration asks for and serves until a signal.
pub fn run_config(config: Config, origin: String) -> anyhow::Result<ExitCode> {
    raise_open_file_limit();
    let runtime = runtime(&config)?;
    runtime.block_on(serve(config, origin, None))?;
    Ok(ExitCode::SUCCESS)
}

pub fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.runtime.worker_threads {
        builder.worker_threads(n.get());
    }
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

/// Says once, at start, which configured features this version does not act on,
/// so nobody believes they are protected by a health check that does not run.
fn warn_inactive_features(config: &Config) {
    for s in &config.services {
        if s.health.kind != HealthKind::None {
            warn!(service = %s.name, "health checks are parsed but not run by this version; backends are treated as up (passive retry still applies)");
        }
    }
    if !config.vrrp.instances.is_empty() {
        warn!("the vrrp section is parsed but VRRP is not run by this version; no virtual IP is managed");
    }
    if config.admin.is_some() {
        warn!("the admin endpoint is not served by this version");
    }
}

/// Serves `config` until SIGTERM or SIGINT (or `until`, for the demo), then drains.
pub async fn serve(
    config: Config,
    origin: String,
    until: Option<CancellationToken>,
) -> anyhow::Result<()> {
    if let Some(udp) = config.services.iter().find(|s| s.protocol == Protocol::Udp) {
        bail!(
            "service {}: protocol udp is not supported by this version of tandem",
            udp.name
        );
    }
    warn_inactive_features(&config);

    // Bind everything before accepting anything: a port clash stops the start
    // with every clash named, not after half the services came up.
    let mut bound = Vec::new();
    let mut failures = Vec::new();
    for service in &config.services {
        match tandem_listener::bind_tcp(service.listen) {
            Ok(l) => bound.push((service.clone(), l)),
            Err(e) => failures.push(format!("service {}: {e}", service.name)),
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            error!("{f}");
        }
        bail!(
            "{} listener(s) could not be bound, not started",
            failures.len()
        );
    }

    let forwarder = Forwarder::new();
    let stop = CancellationToken::new();
    let cut_all = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut services = Vec::new();
    let mut acceptors = Vec::new();
    for (service, std_listener) in bound {
        let listener = TcpListener::from_std(std_listener)
            .with_context(|| format!("service {}: cannot register listener", service.name))?;
        info!(
            service = %service.name,
            listen = %service.listen,
            backends = service.backends.len(),
            forwarding = ?service.forwarding,
            "listening"
        );
        let state = ServiceState::new(service);
        services.push(Arc::clone(&state));
        let acceptor = TcpAcceptor {
            service: state,
            listener,
            forwarder: forwarder.clone(),
            tracker: tracker.clone(),
            cut: cut_all.child_token(),
        };
        acceptors.push(tokio::spawn(acceptor.run(stop.clone())));
    }
    info!(config = %origin, services = services.len(), "tandem started");

    let mut signals = Signals::new()?;
    // Installed so that SIGHUP (the operator's reload habit) does not kill the process.
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let until = until.unwrap_or_default();
    loop {
        tokio::select! {
            name = signals.stop() => { info!(signal = name, "shutting down: no new connections"); break; }
            () = until.cancelled() => { info!("shutting down: no new connections"); break; }
            _ = hangup.recv() => {
                warn!("SIGHUP received: reload is not supported by this version; restart tandem to apply a new configuration");
            }
        }
    }

    stop.cancel();
    for a in acceptors {
        let _ = a.await;
    }
    tracker.close();
    let open: u64 = services
        .iter()
        .map(|s| s.counters.active.load(Relaxed))
        .sum();
    if open > 0 {
        info!(open_connections = open, "draining");
    }
    let longest_drain = config
        .services
        .iter()
        .map(|s| s.drain_timeout)
        .max()
        .unwrap_or_default();
    tokio::select! {
        () = tracker.wait() => {}
        () = tokio::time::sleep(longest_drain + CUT_GRACE) => {}
        name = signals.stop() => {
            warn!(signal = name, "second signal: exiting at once");
            std::process::exit(1);
        }
    }
    cut_all.cancel();
    let _ = tokio::time::timeout(CUT_GRACE, tracker.wait()).await;
    let cut: u64 = services
        .iter()
        .map(|s| s.counters.cut_at_drain.load(Relaxed))
        .sum();
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
