//! The services as tasks: for each one an acceptor, a health checker and the
//! tokens that stop them. The [`Supervisor`] is the only owner of those tasks;
//! what everyone else reads (the metrics collector, the admin endpoint, VRRP
//! tracking) is published from it in one place, [`Supervisor::publish`],
//! after a change has been committed whole.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::Registry;
use tandem_config::{Config, Service};
use tandem_forward::Forwarder;
use tandem_listener::{
    drain_then_cut, ListenerMetrics, ServiceState, Services, SessionBudget, TcpAcceptor,
    UdpAcceptor,
};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long cut connections get to finish closing before the process exits.
const CUT_GRACE: Duration = Duration::from_secs(2);

/// How long a stopped acceptor may take to let go of its socket.
const ACCEPTOR_STOP: Duration = Duration::from_secs(2);

/// A listening socket registered with the runtime, ready for an acceptor.
#[derive(Debug)]
pub(super) enum Socket {
    Tcp(TcpListener),
    Udp {
        socket: Arc<UdpSocket>,
        sender: Arc<std::net::UdpSocket>,
    },
    /// `forwarding: nat`: the kernel forwards, nothing is bound.
    Kernel,
}

/// What readers of the running services see; written only by [`Supervisor::publish`].
#[derive(Debug, Default)]
pub(super) struct Published {
    /// For the metrics collector, drains, status and VRRP tracking.
    pub(super) services: Arc<Services>,
    /// The health checkers, for the last probe results in `status`.
    pub(super) checks: ArcSwap<Vec<tandem_health::Handle>>,
    /// Woken by every health transition, for VRRP tracking.
    pub(super) health_changed: Notify,
    /// Woken by every health transition and every commit, for the nat table.
    pub(super) nat_changed: Notify,
}

/// One service as tasks.
struct RunningService {
    state: Arc<ServiceState>,
    /// Stops the acceptor (and so accepting); connections go on.
    stop: CancellationToken,
    /// Cuts the service's open connections (at the end of a drain).
    cut: CancellationToken,
    acceptor: JoinHandle<()>,
    health: tandem_health::Handle,
    health_stop: CancellationToken,
}

/// Owns the running services and what they are built with.
pub(super) struct Supervisor {
    /// The configuration that runs now.
    pub(super) config: Config,
    services: Vec<RunningService>,
    forwarder: Forwarder,
    tracker: TaskTracker,
    cut_all: CancellationToken,
    listener_metrics: ListenerMetrics,
    health_metrics: tandem_health::HealthMetrics,
    /// Descriptors UDP sessions may hold, across all UDP services.
    udp_budget: Arc<SessionBudget>,
    pub(super) published: Arc<Published>,
}

impl Supervisor {
    /// A supervisor running nothing yet, its components' metrics registered.
    /// `config` is what it starts from: its services are not running.
    pub(super) fn new(config: &Config, registry: &Registry) -> anyhow::Result<Self> {
        let published = Arc::new(Published::default());
        let forwarder = Forwarder::new();
        let listener_metrics =
            ListenerMetrics::register(registry, Arc::clone(&published.services), forwarder.clone())
                .map_err(|e| anyhow::anyhow!("cannot register listener metrics: {e}"))?;
        let health_metrics = tandem_health::HealthMetrics::register(registry)
            .map_err(|e| anyhow::anyhow!("cannot register health metrics: {e}"))?;
        Ok(Supervisor {
            config: Config {
                services: Vec::new(),
                ..config.clone()
            },
            services: Vec::new(),
            forwarder,
            tracker: TaskTracker::new(),
            cut_all: CancellationToken::new(),
            listener_metrics,
            health_metrics,
            udp_budget: SessionBudget::for_this_process(),
            published,
        })
    }

    /// UDP sessions the whole process may hold (see `SessionBudget`).
    pub(super) fn udp_session_budget(&self) -> u64 {
        self.udp_budget.max()
    }

    #[cfg(test)]
    pub(super) fn find(&self, name: &str) -> Option<&Arc<ServiceState>> {
        self.services
            .iter()
            .map(|r| &r.state)
            .find(|s| s.name == name)
    }

    /// Starts a service that is new to the process.
    pub(super) fn start(&mut self, config: Service, socket: Socket, prober: tandem_health::Prober) {
        let state = ServiceState::new(
            config.clone(),
            self.listener_metrics.duration_of(&config.name),
        );
        let backends = state.snapshot.load().backends.as_slice().to_vec();
        let checker = tandem_health::Checker::with_prober(
            config.name.clone(),
            prober,
            &config.health,
            backends,
        );
        let health = checker.handle();
        health.set_probe_observer(Some(self.health_metrics.observer()));
        let health_stop = CancellationToken::new();
        self.forward_transitions(checker.subscribe(), health_stop.clone());
        tokio::spawn(checker.run(health_stop.clone()));
        let stop = CancellationToken::new();
        let cut = self.cut_all.child_token();
        let acceptor = self.spawn_acceptor(&state, socket, &stop, &cut);
        self.services.push(RunningService {
            state,
            stop,
            cut,
            acceptor,
            health,
            health_stop,
        });
    }

    /// Wakes VRRP tracking on every health transition of one service.
    fn forward_transitions(
        &self,
        mut transitions: tokio::sync::broadcast::Receiver<tandem_health::Transition>,
        stop: CancellationToken,
    ) {
        let published = Arc::clone(&self.published);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    received = transitions.recv() => match received {
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            published.health_changed.notify_one();
                            published.nat_changed.notify_one();
                        }
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        });
    }

    fn spawn_acceptor(
        &self,
        state: &Arc<ServiceState>,
        socket: Socket,
        stop: &CancellationToken,
        cut: &CancellationToken,
    ) -> JoinHandle<()> {
        let config = state.snapshot.load().config.clone();
        let task = match socket {
            Socket::Tcp(listener) => tokio::spawn(
                TcpAcceptor {
                    service: Arc::clone(state),
                    listener,
                    forwarder: self.forwarder.clone(),
                    tracker: self.tracker.clone(),
                    cut: cut.clone(),
                }
                .run(stop.clone()),
            ),
            Socket::Udp { socket, sender } => tokio::spawn(
                UdpAcceptor {
                    service: Arc::clone(state),
                    socket,
                    sender,
                    tracker: self.tracker.clone(),
                    cut: cut.clone(),
                    budget: Arc::clone(&self.udp_budget),
                }
                .run(stop.clone()),
            ),
            Socket::Kernel => {
                let stop = stop.clone();
                info!(service = %config.name, listen = %config.listen, backends = config.backends.len(), "forwarding in the kernel (nat)");
                return tokio::spawn(async move { stop.cancelled().await });
            }
        };
        info!(
            service = %config.name,
            listen = %config.listen,
            backends = config.backends.len(),
            scheduler = config.scheduler.as_str(),
            "listening"
        );
        task
    }

    /// Applies a new config of a running service: backends that stay keep
    /// their state and counters; with `socket`, it moves to that socket.
    /// Returns the stopped acceptor to await, if it moved.
    pub(super) fn update(
        &mut self,
        config: Service,
        socket: Option<Socket>,
        prober: tandem_health::Prober,
    ) -> Option<JoinHandle<()>> {
        let index = self.index(&config.name);
        let running = &self.services[index];
        running.state.update(config.clone());
        let backends = running.state.snapshot.load().backends.as_slice().to_vec();
        running.health.apply(prober, &config.health, backends);
        let socket = socket?;
        // Its open connections keep flowing under the same `cut`; only
        // accepting moves.
        running.stop.cancel();
        let stop = CancellationToken::new();
        let acceptor = self.spawn_acceptor(&running.state, socket, &stop, &running.cut);
        let running = &mut self.services[index];
        running.stop = stop;
        Some(std::mem::replace(&mut running.acceptor, acceptor))
    }

    /// Stops accepting for a service gone from the file and drains it in
    /// the background; returns the acceptor to await.
    pub(super) fn remove(&mut self, name: &str) -> JoinHandle<()> {
        let removed = self.services.remove(self.index(name));
        removed.stop.cancel();
        removed.health_stop.cancel();
        drain_then_cut(&removed.state, removed.cut.clone());
        removed.acceptor
    }

    fn index(&self, name: &str) -> usize {
        self.services
            .iter()
            .position(|r| r.state.name == name)
            .expect("the diff names only services that run")
    }

    /// Puts the services in `order` (the new file's), then publishes them.
    pub(super) fn publish(&mut self, order: &[Service]) {
        self.services.sort_by_key(|r| {
            order
                .iter()
                .position(|s| s.name == r.state.name)
                .unwrap_or(usize::MAX)
        });
        self.published
            .services
            .store(self.services.iter().map(|r| Arc::clone(&r.state)).collect());
        self.published.checks.store(Arc::new(
            self.services.iter().map(|r| r.health.clone()).collect(),
        ));
        self.published.nat_changed.notify_one();
    }

    /// Stops accepting everywhere, drains, cuts what is left; returns how many
    /// were cut. `hurry` resolving (a second signal) exits the process at once.
    pub(super) async fn drain(
        &mut self,
        hurry: impl std::future::Future<Output = &'static str>,
    ) -> u64 {
        for r in &self.services {
            r.stop.cancel();
        }
        for r in &mut self.services {
            let _ = (&mut r.acceptor).await;
            r.health_stop.cancel();
        }
        for r in &self.services {
            drain_then_cut(&r.state, r.cut.clone());
        }
        let longest_drain = self
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
            name = hurry => {
                warn!(signal = name, "second signal: exiting at once");
                std::process::exit(1);
            }
        }
        self.cut_all.cancel();
        let _ = tokio::time::timeout(CUT_GRACE, self.tracker.wait()).await;
        // Services removed by earlier reloads count too: the list holds only current ones.
        self.services
            .iter()
            .map(|r| r.state.counters.cut_at_drain.load(Relaxed))
            .sum()
    }
}

/// Waits for stopped acceptors to let go of their sockets, each bounded.
pub(super) async fn await_stopped(acceptors: Vec<JoinHandle<()>>) {
    for acceptor in acceptors {
        if tokio::time::timeout(ACCEPTOR_STOP, acceptor).await.is_err() {
            warn!(
                "an acceptor did not stop within {}s",
                ACCEPTOR_STOP.as_secs()
            );
        }
    }
}
