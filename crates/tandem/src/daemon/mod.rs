//! `tandem run`: load, bind, serve, reload, and shut down in order.
//!
//! [`serve`] reads as its five steps: **bind** every listener (a clash stops
//! the start with every clash named), **build** the daemon (metrics, VRRP),
//! **spawn** the services, then VRRP, then the admin endpoint, **wait** for a
//! signal (SIGHUP reloads), **drain**. The jobs live in their own modules:
//! - `startup`: runtime, open-file limit, admin token and listener;
//! - `supervisor`: the services as tasks, published to readers in one place;
//! - `reload`: prepare (everything that can fail) and commit (nothing can);
//! - `admin`: the daemon as the admin endpoint sees it;
//! - `tracking`: service health into VRRP priorities and routed VIPs;
//! - `nat`: the nftables table of `forwarding: nat` services;
//! - `signals`: SIGTERM/SIGINT/SIGHUP.

mod admin;
mod nat;
mod reload;
mod signals;
mod startup;
mod supervisor;
mod tracking;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tandem_config::{Config, Diff};
use tandem_metrics::{Access, AdminServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::sd_notify::notify;
pub use reload::ReloadError;
pub use startup::{raise_open_file_limit, runtime};
use supervisor::{Published, Supervisor};

/// `tandem run` with a configuration it cannot use exits with EX_USAGE
/// (sysexits.h), so a supervisor can tell a bad file from a crash.
pub const EXIT_BAD_CONFIG: u8 = 64;

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
    let config = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    raise_open_file_limit();
    let runtime = runtime(&config)?;
    runtime.block_on(serve(config, Source::File(path.to_owned()), None))?;
    Ok(ExitCode::SUCCESS)
}

/// The file's configuration, or every error logged and EX_USAGE to exit with.
fn load_or_report(path: &Path) -> Result<Config, ExitCode> {
    tandem_config::load(path).map_err(|errors| {
        for e in &errors.0 {
            error!("{e}");
        }
        error!(
            "{}: {} configuration error(s), not started (see `tandem check -c {}`)",
            path.display(),
            errors.0.len(),
            path.display()
        );
        ExitCode::from(EXIT_BAD_CONFIG)
    })
}

/// `tandem flush-routes`: the routes a crashed tandem may have left in its
/// table (the route device normally takes them along). For ExecStopPost.
pub fn flush_routes(path: &Path) -> anyhow::Result<ExitCode> {
    let config = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let Some(routing) = &config.routing else {
        println!("{}: no routing section, nothing to flush", path.display());
        return Ok(ExitCode::SUCCESS);
    };
    let n = tandem_routing::flush(routing.table, routing.protocol).with_context(|| {
        format!(
            "cannot flush routing table {} (protocol {})",
            routing.table, routing.protocol
        )
    })?;
    println!(
        "flushed {n} route(s) of protocol {} from table {}",
        routing.protocol, routing.table
    );
    Ok(ExitCode::SUCCESS)
}

/// The running process: everything the admin endpoint and reload reach.
pub struct Daemon {
    source: Source,
    started: Instant,
    ready: AtomicBool,
    /// What readers see of the services; written only by the supervisor.
    published: Arc<Published>,
    /// Owns the services; its lock serialises reloads.
    supervisor: tokio::sync::Mutex<Supervisor>,
    reloads: reload::Record,
    vrrp: Option<(tandem_vrrp::VrrpHandle, Vec<tandem_config::VrrpInstance>)>,
    routing: Option<tandem_routing::RoutingHandle>,
}

impl Daemon {
    /// Reads the file again and applies the difference; all or nothing.
    pub async fn reload(&self) -> Result<Diff, ReloadError> {
        let mut supervisor = self.supervisor.lock().await;
        let Source::File(path) = &self.source else {
            return Err(ReloadError::Embedded);
        };
        notify("RELOADING=1");
        let result = match tandem_config::load(path) {
            Err(errors) => Err(ReloadError::Invalid(errors)),
            Ok(new) => match reload::prepare(&supervisor, new).await {
                Ok(prepared) => Ok(reload::commit(&mut supervisor, prepared).await),
                Err(e) => Err(e),
            },
        };
        notify("READY=1");
        match &result {
            Ok(diff) => self.reloads.succeeded(diff),
            Err(e) => self.reloads.failed(e),
        }
        result
    }
}

/// The tasks beside the services, stopped in order at the end.
struct Companions {
    routing_stop: CancellationToken,
    routing: Option<JoinHandle<tandem_routing::Leftovers>>,
    withdraw_delay: Duration,
    vrrp_stop: CancellationToken,
    vrrp: Option<JoinHandle<()>>,
    admin_stop: CancellationToken,
    admin: Option<JoinHandle<()>>,
    nat_stop: CancellationToken,
    nat: JoinHandle<()>,
}

/// Serves `config` until SIGTERM or SIGINT (or `until`), then drains.
pub async fn serve(
    config: Config,
    source: Source,
    until: Option<CancellationToken>,
) -> anyhow::Result<()> {
    let token = startup::read_token(&config)?;
    let registry = tandem_metrics::registry();
    let mut supervisor = Supervisor::new(&config, &registry)?;
    let udp_session_budget = supervisor.udp_session_budget();

    // Bind: every listener before accepting on any.
    let services = reload::prepare(&supervisor, config.clone()).await;
    let admin_listener = startup::bind_admin(&config);
    let mut failures: Vec<String> = match &services {
        Err(ReloadError::Services(errors)) => errors.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
        Ok(_) => Vec::new(),
    };
    failures.extend(admin_listener.as_ref().err().cloned());
    if !failures.is_empty() {
        for f in &failures {
            error!("{f}");
        }
        bail!(
            "{} listener(s) could not be bound, not started",
            failures.len()
        );
    }
    let (Ok(services), Ok(admin_listener)) = (services, admin_listener) else {
        unreachable!("failures were returned above");
    };
    // The kernel data path before any service starts: all of the table or,
    // failing, nothing and no start (prepare's dry run said why already).
    let (nft, nat_table) = if nat::wanted(&config) {
        let nft = nat::check(&config).await?;
        nat::apply_at_start(&nft, &config).await?;
        info!("forwarding: nat: table {} written", tandem_nat::TABLE);
        (Some(nft), Some(nat::render_config(&config)))
    } else {
        (None, None)
    };

    // Build.
    let vrrp = if config.vrrp.instances.is_empty() {
        None
    } else {
        Some(
            tandem_vrrp::Vrrp::new(&config.vrrp.instances, &registry)
                .map_err(|e| anyhow::anyhow!("vrrp: {e}"))?,
        )
    };
    let routing = match &config.routing {
        None => None,
        Some(r) => Some(
            tandem_routing::Routing::start(r, &registry)
                .map_err(|e| anyhow::anyhow!("routing: {e}"))?,
        ),
    };
    let reloads = reload::Record::register(&registry).context("cannot register reload metrics")?;

    // Spawn: services, then VRRP (listeners are bound, with IP_FREEBIND for
    // VIPs, before VRRP may take the VIPs, so a node serves the moment it
    // becomes master), then the admin endpoint.
    reload::commit(&mut supervisor, services).await;
    let published = Arc::clone(&supervisor.published);
    let nat_stop = CancellationToken::new();
    let nat_task = tokio::spawn(nat::run(
        Arc::clone(&published),
        nft,
        nat_table,
        nat_stop.clone(),
    ));
    let daemon = Arc::new(Daemon {
        source: source.clone(),
        started: Instant::now(),
        ready: AtomicBool::new(false),
        published: Arc::clone(&published),
        supervisor: tokio::sync::Mutex::new(supervisor),
        reloads,
        vrrp: vrrp
            .as_ref()
            .map(|v| (v.handle(), config.vrrp.instances.clone())),
        routing: routing.as_ref().map(|r| r.handle()),
    });
    let vrrp_stop = CancellationToken::new();
    let routing_stop = CancellationToken::new();
    if vrrp.is_some() || routing.is_some() {
        // Stops with VRRP, which stops after routing: routing's last
        // decision (withdraw all) does not depend on health.
        tokio::spawn(tracking::track_services(
            Arc::clone(&published),
            vrrp.as_ref().map(|v| v.handle()),
            routing.as_ref().map(|r| r.handle()),
            vrrp_stop.clone(),
        ));
    }
    let vrrp_task = vrrp.map(|v| tokio::spawn(v.run(vrrp_stop.clone())));
    let routing_task = routing.map(|r| tokio::spawn(r.run(routing_stop.clone())));
    let admin_stop = CancellationToken::new();
    let admin_task = match (admin_listener, &config.admin) {
        (Some(listener), Some(admin)) => {
            let server = AdminServer {
                listener: TcpListener::from_std(listener).context("admin endpoint")?,
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
    info!(
        config = %source.name(),
        services = config.services.len(),
        udp_session_budget,
        "tandem started"
    );

    // Wait.
    let mut signals = signals::Signals::install()?;
    let until = until.unwrap_or_default();
    loop {
        tokio::select! {
            request = signals.next() => match request {
                signals::Request::Stop(name) => {
                    info!(signal = name, "shutting down: no new connections");
                    break;
                }
                signals::Request::Reload => {
                    info!("SIGHUP received: reloading");
                    let _ = daemon.reload().await;
                }
            },
            () = until.cancelled() => { info!("shutting down: no new connections"); break; }
        }
    }

    // Drain.
    drain(
        &daemon,
        Companions {
            routing_stop,
            routing: routing_task,
            withdraw_delay: config
                .routing
                .as_ref()
                .map_or(Duration::ZERO, |r| r.withdraw_delay),
            vrrp_stop,
            vrrp: vrrp_task,
            admin_stop,
            admin: admin_task,
            nat_stop,
            nat: nat_task,
        },
        &mut signals,
    )
    .await;
    Ok(())
}

/// Routed VIPs are withdrawn first, and the listeners keep accepting for
/// `withdraw_delay` while the routers move new flows to other nodes; VRRP
/// resigns (priority 0: a backup takes over at once); then the listeners
/// stop and connections drain, and the VIPs leave the node last. The admin
/// endpoint answers to the end.
async fn drain(daemon: &Daemon, companions: Companions, signals: &mut signals::Signals) {
    notify("STOPPING=1");
    companions.routing_stop.cancel();
    let mut leftovers = None;
    if let Some(task) = companions.routing {
        match tokio::time::timeout(Duration::from_secs(3), task).await {
            Ok(Ok(l)) => {
                if l.withdrawn() > 0 && !companions.withdraw_delay.is_zero() {
                    info!(
                        routes = l.withdrawn(),
                        accepting_for = ?companions.withdraw_delay,
                        "routes withdrawn; still accepting while routers move flows away"
                    );
                    tokio::time::sleep(companions.withdraw_delay).await;
                }
                leftovers = Some(l);
            }
            Ok(Err(e)) => warn!("routing task failed: {e}"),
            Err(_) => warn!("routing did not withdraw within 3s"),
        }
    }
    companions.vrrp_stop.cancel();
    if let Some(task) = companions.vrrp {
        if tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .is_err()
        {
            warn!("vrrp did not stop within 3s");
        }
    }
    let cut = daemon.supervisor.lock().await.drain(signals.stop()).await;
    // After the drain: flows the kernel forwards end with the table.
    companions.nat_stop.cancel();
    let _ = companions.nat.await;
    if let Some(l) = leftovers {
        l.release();
    }
    companions.admin_stop.cancel();
    if let Some(task) = companions.admin {
        let _ = task.await;
    }
    info!(cut_connections = cut, "stopped");
}
