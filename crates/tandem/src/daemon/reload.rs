//! Reload, all or nothing, in two steps.
//!
//! [`prepare`] does everything that can fail, touching nothing that runs:
//! it diffs the running config against the new one (`tandem_config::diff`),
//! binds and registers the sockets of added and moved services, and builds
//! the health probers of every changed service (reading their TLS files).
//! Any failure drops what was prepared (closing the new sockets) and returns
//! every error; the old config keeps serving.
//!
//! [`commit`] cannot fail: it starts, updates, moves and removes services as
//! the diff says and publishes the result at once.
//!
//! The start of the daemon is the same two steps from a config with no
//! services, so the first start and every reload bind, check and start
//! services through one path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tandem_config::{Change, Clash, Config, ConfigErrors, Diff};
use tandem_core::Protocol;
use tandem_listener::BindError;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{error, info, warn};

use super::supervisor::{await_stopped, Socket, Supervisor};

/// Why one service cannot be started or changed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service {service}: {source}")]
    Bind { service: String, source: BindError },
    #[error("service {service}: cannot register the listener: {source}")]
    Register {
        service: String,
        source: std::io::Error,
    },
    #[error("service {service}: health: {source}")]
    Health {
        service: String,
        source: tandem_health::HealthError,
    },
    #[error("{0}")]
    Nat(tandem_nat::NatError),
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this configuration is built in; there is no file to reload")]
    Embedded,
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("{}", lines(.0))]
    Clashes(Vec<Clash>),
    #[error("{}", lines(.0))]
    Services(Vec<ServiceError>),
}

fn lines<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything a reload needs that could fail, done; see the module doc.
#[derive(Debug)]
pub(super) struct Prepared {
    config: Config,
    diff: Diff,
    sockets: HashMap<String, Socket>,
    probers: HashMap<String, tandem_health::Prober>,
}

/// Prepares the change from what `supervisor` runs to `new`.
pub(super) async fn prepare(supervisor: &Supervisor, new: Config) -> Result<Prepared, ReloadError> {
    let diff = tandem_config::diff(&supervisor.config, &new);
    if !diff.clashes.is_empty() {
        return Err(ReloadError::Clashes(diff.clashes));
    }
    let mut failures = Vec::new();
    let mut sockets = HashMap::new();
    let mut probers = HashMap::new();
    for change in &diff.services {
        let Some(service) = new.services.iter().find(|s| s.name == change.name()) else {
            continue; // removed
        };
        if matches!(change, Change::Unchanged(_)) {
            continue;
        }
        match tandem_health::Prober::new(&service.health) {
            Ok(p) => {
                probers.insert(service.name.clone(), p);
            }
            Err(source) => failures.push(ServiceError::Health {
                service: service.name.clone(),
                source,
            }),
        }
        if change.needs_socket() {
            match open(service).await {
                Ok(socket) => {
                    sockets.insert(service.name.clone(), socket);
                }
                Err(e) => failures.push(e),
            }
        }
    }
    // The kernel's dry run of the whole table, before anything changes.
    if super::nat::wanted(&new) {
        if let Err(e) = super::nat::check(&new).await {
            failures.push(ServiceError::Nat(e));
        }
    }
    if !failures.is_empty() {
        return Err(ReloadError::Services(failures));
    }
    Ok(Prepared {
        config: new,
        diff,
        sockets,
        probers,
    })
}

/// Binds and registers the listening socket of `service`.
async fn open(service: &tandem_config::Service) -> Result<Socket, ServiceError> {
    let name = || service.name.clone();
    if !service.forwarding.in_userspace() {
        return Ok(Socket::Kernel);
    }
    // Off the runtime thread: a port clash looks for the process that holds
    // the port through /proc, which can take long on a busy host, and with
    // `worker_threads: 1` that thread is the data path.
    let (listen, protocol) = (service.listen, service.protocol);
    let bound = tokio::task::spawn_blocking(move || match protocol {
        Protocol::Tcp => tandem_listener::bind_tcp(listen).map(Bound::Tcp),
        Protocol::Udp => tandem_listener::bind_udp(listen).map(Bound::Udp),
    })
    .await
    .map_err(|e| ServiceError::Register {
        service: name(),
        source: std::io::Error::other(e),
    })?
    .map_err(|source| ServiceError::Bind {
        service: name(),
        source,
    })?;
    let register = |source| ServiceError::Register {
        service: name(),
        source,
    };
    Ok(match bound {
        Bound::Tcp(listener) => Socket::Tcp(TcpListener::from_std(listener).map_err(register)?),
        Bound::Udp(socket) => {
            let sender = socket.try_clone().map_err(register)?;
            Socket::Udp {
                socket: Arc::new(UdpSocket::from_std(socket).map_err(register)?),
                sender: Arc::new(sender),
            }
        }
    })
}

enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Applies a prepared change; cannot fail. Returns the diff it applied.
pub(super) async fn commit(supervisor: &mut Supervisor, prepared: Prepared) -> Diff {
    let Prepared {
        config,
        diff,
        mut sockets,
        mut probers,
    } = prepared;
    for section in &diff.restart_only {
        warn!(
            "reload: {} settings change only at restart",
            section.as_str()
        );
    }
    // Acceptors told to stop; awaited before the reload returns, so that a
    // removed or moved address no longer accepts once the reload reports.
    let mut stopping = Vec::new();
    for change in &diff.services {
        let name = change.name();
        let service = || {
            config
                .services
                .iter()
                .find(|s| s.name == name)
                .expect("a change that is not a removal names a service of the new file")
                .clone()
        };
        let mut prober = || {
            probers
                .remove(name)
                .expect("prepare built a prober for every changed service")
        };
        match change {
            Change::Unchanged(_) => {}
            Change::Added(_) => {
                let socket = sockets
                    .remove(name)
                    .expect("prepare bound every added service");
                supervisor.start(service(), socket, prober());
            }
            Change::Updated(_) => {
                supervisor.update(service(), None, prober());
            }
            Change::Moved { .. } => {
                let socket = sockets
                    .remove(name)
                    .expect("prepare bound every moved service");
                stopping.extend(supervisor.update(service(), Some(socket), prober()));
            }
            Change::Removed(_) => stopping.push(supervisor.remove(name)),
        }
    }
    await_stopped(stopping).await;
    supervisor.publish(&config.services);
    supervisor.config = config;
    diff
}

/// The record of reloads: `tandem_config_reloads_total{result}`,
/// `tandem_config_last_reload_success_timestamp_seconds` and what `status` shows.
pub(super) struct Record {
    total: IntCounterVec,
    last_success: IntGauge,
    status: Mutex<tandem_metrics::ReloadStatus>,
}

impl Record {
    /// Registers the metrics; the start counts as the first successful load.
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
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
        last_success.set(unix_now() as i64);
        Ok(Record {
            total,
            last_success,
            status: Mutex::new(tandem_metrics::ReloadStatus {
                last_success_unix: unix_now(),
                ..Default::default()
            }),
        })
    }

    pub(super) fn succeeded(&self, diff: &Diff) {
        self.total.with_label_values(&["success"]).inc();
        self.last_success.set(unix_now() as i64);
        let mut status = self.lock();
        status.reloads_ok += 1;
        status.last_success_unix = unix_now();
        status.last_error = None;
        info!("reload: {diff}");
    }

    pub(super) fn failed(&self, e: &ReloadError) {
        self.total.with_label_values(&["failure"]).inc();
        let mut status = self.lock();
        status.reloads_failed += 1;
        status.last_error = Some(e.to_string());
        error!("reload failed, still running the previous configuration: {e}");
    }

    pub(super) fn status(&self) -> tandem_metrics::ReloadStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, tandem_metrics::ReloadStatus> {
        // Replaced field by field under the lock, never left half-written.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(services: &[(&str, std::net::SocketAddr)]) -> Config {
        let mut yaml = String::from("services:\n");
        for (name, listen) in services {
            yaml.push_str(&format!(
                "  - {{ name: {name}, listen: {listen}, backends: [{{ address: 127.0.0.1:9 }}] }}\n"
            ));
        }
        tandem_config::parse(&yaml, "test").unwrap()
    }

    fn free() -> std::net::SocketAddr {
        test_support::free_addr()
    }

    #[tokio::test]
    async fn a_failed_prepare_changes_nothing_and_names_every_failure() {
        let registry = Registry::new();
        let (a, b) = (free(), free());
        let mut supervisor = Supervisor::new(&config(&[("a", a)]), &registry).unwrap();
        let start = prepare(&supervisor, config(&[("a", a)])).await.unwrap();
        commit(&mut supervisor, start).await;

        let taken = std::net::TcpListener::bind(b).unwrap();
        let mut bad_ca = config(&[("a", a), ("b", b)]);
        bad_ca.services[0].health.kind = tandem_config::HealthKind::Https;
        bad_ca.services[0].health.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let e = prepare(&supervisor, bad_ca).await.unwrap_err();
        let ReloadError::Services(failures) = &e else {
            panic!("{e}")
        };
        assert_eq!(failures.len(), 2, "{e}");
        assert!(matches!(&failures[0], ServiceError::Health { service, .. } if service == "a"));
        assert!(matches!(&failures[1], ServiceError::Bind { service, .. } if service == "b"));
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(e.to_string().contains("address already in use"), "{e}");
        // Still serving `a` on its socket; nothing half-applied.
        assert_eq!(supervisor.config.services.len(), 1);
        assert!(
            std::net::TcpListener::bind(a).is_err(),
            "a keeps its socket"
        );
        drop(taken);
    }

    #[tokio::test]
    async fn commit_applies_the_diff_and_publishes_in_file_order() {
        let registry = Registry::new();
        let (a, b, c) = (free(), free(), free());
        let mut supervisor = Supervisor::new(&config(&[("a", a)]), &registry).unwrap();
        let start = prepare(&supervisor, config(&[("a", a), ("b", b)]))
            .await
            .unwrap();
        let diff = commit(&mut supervisor, start).await;
        assert_eq!(diff.to_string(), "added a, b");
        let kept = Arc::clone(supervisor.find("a").unwrap());

        // `a` may take b's socket only once `b` is gone: a clash while it runs.
        assert!(matches!(
            prepare(&supervisor, config(&[("a", b), ("b", c)])).await,
            Err(ReloadError::Clashes(_))
        ));
        let prepared = prepare(&supervisor, config(&[("c", c), ("a", a)]))
            .await
            .unwrap();
        let diff = commit(&mut supervisor, prepared).await;
        assert_eq!(diff.to_string(), "added c; removed b");
        let names: Vec<String> = supervisor
            .published
            .services
            .load()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["c", "a"]);
        assert!(
            Arc::ptr_eq(&kept, supervisor.find("a").unwrap()),
            "a kept its state"
        );
        assert_eq!(supervisor.published.checks.load().len(), 2);
        // b's socket was let go before commit returned.
        assert!(std::net::TcpListener::bind(b).is_ok());
    }
}
