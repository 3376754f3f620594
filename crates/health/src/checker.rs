//! The long-running part: one task per backend that probes on its interval,
//! feeds the rise/fall machine and writes the verdict into the backend's atomic.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tandem_config::{Health, InitialState};
use tandem_core::{Backend, BackendAddress, BackendState};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::eject::ejection_reason;
use crate::jitter::Jitter;
use crate::machine::{Machine, Thresholds};
use crate::probe::{Outcome, ProbeFailure, Prober};
use crate::HealthError;

/// How many transitions a slow subscriber may fall behind before it sees
/// `RecvError::Lagged`. Transitions are rare; this is generous.
const TRANSITION_BUFFER: usize = 1024;

/// One change of a backend's health, as logged and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub service: String,
    /// The backend's label: its `name`, else its address.
    pub backend: String,
    pub address: BackendAddress,
    /// [`BackendState::Up`] or [`BackendState::Down`], never `Draining`
    /// (draining is an operator's flag, not health).
    pub from: BackendState,
    pub to: BackendState,
    /// `status 500`, `connection refused`, `ejected after 3 consecutive connect failures`, …
    pub reason: String,
    pub at: SystemTime,
}

/// The last probe of one backend, for a status page and for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub service: String,
    pub backend: String,
    pub address: BackendAddress,
    pub ok: bool,
    /// Why the probe failed, or what it saw when it succeeded (`status 200`).
    pub reason: String,
    /// `None` when `ok`.
    pub failure: Option<ProbeFailure>,
    /// When the probe ended.
    pub at: SystemTime,
    /// How long the probe took (connect to end), for
    /// `tandem_health_check_duration_seconds`.
    pub duration: Duration,
    /// The backend's health verdict after this probe.
    pub up: bool,
}

/// Called after every probe with its report (e.g. to observe a histogram).
/// Runs on the probing task: keep it short and non-blocking.
pub type ProbeObserver = Arc<dyn Fn(&ProbeReport) + Send + Sync>;

/// Actively checks the backends of one service. Build it with
/// [`Checker::new`], keep a [`Handle`] for reloads and subscriptions, then
/// spawn [`Checker::run`].
#[derive(Debug)]
pub struct Checker {
    shared: Arc<Shared>,
}

/// A cheap, cloneable way to reach a running [`Checker`]: subscribe to
/// transitions, read the last results, replace the health settings and backends.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    service: String,
    plan: watch::Sender<Arc<Plan>>,
    transitions: broadcast::Sender<Transition>,
    observer: Mutex<Option<ProbeObserver>>,
    /// Serialises updates: each one reads the current plan and replaces it.
    updating: Mutex<()>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("service", &self.service)
            .field("backends", &self.plan.borrow().members.len())
            .finish_non_exhaustive()
    }
}

/// What the tasks work from; replaced as a whole by [`Handle::update`].
#[derive(Debug)]
struct Plan {
    health: Health,
    prober: Prober,
    members: Vec<Member>,
}

#[derive(Debug, Clone)]
struct Member {
    backend: Arc<Backend>,
    last: Arc<Mutex<Option<ProbeReport>>>,
}

/// Identity of a backend across reloads: the same `Arc`.
fn key(backend: &Arc<Backend>) -> usize {
    Arc::as_ptr(backend) as usize
}

fn state(up: bool) -> BackendState {
    if up {
        BackendState::Up
    } else {
        BackendState::Down
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data under these locks is replaced whole, never left half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Checker {
    /// Reads the TLS files (an unusable file is an error naming it) and sets
    /// every backend's up flag to `health.initial`.
    pub fn new(
        service: impl Into<String>,
        health: &Health,
        backends: Vec<Arc<Backend>>,
    ) -> Result<Checker, HealthError> {
        Ok(Checker::with_prober(
            service,
            Prober::new(health)?,
            health,
            backends,
        ))
    }

    /// [`Checker::new`] with a prober already built from `health` (its TLS
    /// files read): cannot fail, so a reload can build every prober first
    /// and start checkers only once nothing else can fail.
    pub fn with_prober(
        service: impl Into<String>,
        prober: Prober,
        health: &Health,
        backends: Vec<Arc<Backend>>,
    ) -> Checker {
        let service = service.into();
        let members = adopt(&service, &[], health, backends);
        let (plan, _) = watch::channel(Arc::new(Plan {
            health: health.clone(),
            prober,
            members,
        }));
        let (transitions, _) = broadcast::channel(TRANSITION_BUFFER);
        Checker {
            shared: Arc::new(Shared {
                service,
                plan,
                transitions,
                observer: Mutex::new(None),
                updating: Mutex::new(()),
            }),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// See [`Handle::subscribe`].
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.transitions.subscribe()
    }

    /// See [`Handle::last_results`].
    pub fn last_results(&self) -> Vec<ProbeReport> {
        self.handle().last_results()
    }

    /// Probes until `shutdown` is cancelled, then waits for the probes in
    /// flight to be dropped. Follows [`Handle::update`]s: a task per backend
    /// is started for new backends and stopped for removed ones.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.shared;
        let mut plan_rx = shared.plan.subscribe();
        let mut tasks = JoinSet::new();
        let mut running: HashMap<usize, (Arc<Backend>, CancellationToken)> = HashMap::new();
        {
            let plan = plan_rx.borrow();
            info!(
                service = %shared.service,
                backends = plan.members.len(),
                check = plan.health.kind.as_str(),
                interval = %humantime::format_duration(plan.health.interval),
                "health checks running"
            );
        }
        loop {
            let plan = Arc::clone(&plan_rx.borrow_and_update());
            running.retain(|k, (_, stop)| {
                let stays = plan.members.iter().any(|m| key(&m.backend) == *k);
                if !stays {
                    stop.cancel();
                }
                stays
            });
            for member in &plan.members {
                if running.contains_key(&key(&member.backend)) {
                    continue;
                }
                let stop = shutdown.child_token();
                let prober = Watcher {
                    shared: Arc::clone(&shared),
                    machine: Machine::new(if member.backend.is_up() {
                        InitialState::Up
                    } else {
                        InitialState::Down
                    }),
                    member: member.clone(),
                    jitter: Jitter::new(),
                };
                tasks.spawn(prober.run(shared.plan.subscribe(), stop.clone()));
                running.insert(key(&member.backend), (Arc::clone(&member.backend), stop));
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = plan_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(Err(e)) = tasks.join_next() => {
                    error!(service = %shared.service, "health check task failed: {e}");
                }
            }
        }
        for (_, stop) in running.values() {
            stop.cancel();
        }
        while tasks.join_next().await.is_some() {}
        debug!(service = %shared.service, "health checks stopped");
    }
}

impl Handle {
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// Every change of any backend's health, once, in order per backend.
    /// A receiver that falls more than 1024 transitions behind gets
    /// `RecvError::Lagged` and then the newest ones.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.transitions.subscribe()
    }

    /// The last probe of each current backend that has been probed at
    /// least once, in backend order.
    pub fn last_results(&self) -> Vec<ProbeReport> {
        let plan = Arc::clone(&self.shared.plan.borrow());
        plan.members
            .iter()
            .filter_map(|m| lock(&m.last).clone())
            .collect()
    }

    /// Called after every probe of this service; `None` removes it.
    pub fn set_probe_observer(&self, observer: Option<ProbeObserver>) {
        *lock(&self.shared.observer) = observer;
    }

    /// Replaces the health settings and the set of backends (reload).
    ///
    /// Backends that stay (the same `Arc<Backend>`) keep their state, their
    /// rise/fall count and their last result; new ones start at
    /// `health.initial`; removed ones stop being probed. If the TLS files
    /// cannot be used the error is returned and nothing changes.
    pub fn update(&self, health: &Health, backends: Vec<Arc<Backend>>) -> Result<(), HealthError> {
        self.apply(Prober::new(health)?, health, backends);
        Ok(())
    }

    /// [`Handle::update`] with a prober already built from `health`: cannot fail.
    pub fn apply(&self, prober: Prober, health: &Health, backends: Vec<Arc<Backend>>) {
        let _serial = lock(&self.shared.updating);
        let old = Arc::clone(&self.shared.plan.borrow());
        let members = adopt(&self.shared.service, &old.members, health, backends);
        self.shared.plan.send_replace(Arc::new(Plan {
            health: health.clone(),
            prober,
            members,
        }));
    }
}

/// The members of a new plan: old slots for backends that stay, new slots
/// (and the up flag set to `initial`) for the others. Duplicates are dropped.
fn adopt(
    service: &str,
    old: &[Member],
    health: &Health,
    backends: Vec<Arc<Backend>>,
) -> Vec<Member> {
    let mut members: Vec<Member> = Vec::with_capacity(backends.len());
    for backend in backends {
        if members.iter().any(|m| key(&m.backend) == key(&backend)) {
            continue;
        }
        if let Some(m) = old.iter().find(|m| key(&m.backend) == key(&backend)) {
            members.push(m.clone());
            continue;
        }
        let up = health.initial == InitialState::Up;
        backend.set_up(up);
        debug!(service, backend = %backend.label(), "backend starts {}", state(up));
        members.push(Member {
            backend,
            last: Arc::new(Mutex::new(None)),
        });
    }
    members
}

/// The task that probes one backend.
struct Watcher {
    shared: Arc<Shared>,
    member: Member,
    machine: Machine,
    jitter: Jitter,
}

impl Watcher {
    async fn run(mut self, mut plan_rx: watch::Receiver<Arc<Plan>>, stop: CancellationToken) {
        let mut plan = Arc::clone(&plan_rx.borrow_and_update());
        let mut next = Instant::now() + self.jitter.first(plan.health.interval);
        loop {
            let active = plan.prober.is_active();
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = plan_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let new = Arc::clone(&plan_rx.borrow_and_update());
                    self.replan(&plan, &new, &mut next);
                    plan = new;
                    continue;
                }
                _ = tokio::time::sleep_until(next), if active => {}
            }
            let start = Instant::now();
            self.notice_outside_change(&plan.health);
            let address = self.member.backend.address();
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = plan.prober.probe_with(address, self.member.backend.send_proxy()) => outcome,
            };
            // Ejected while the probe ran: the probe started before, so it
            // does not count towards `rise`.
            if !self.notice_outside_change(&plan.health) {
                let thresholds = Thresholds {
                    rise: plan.health.rise,
                    fall: plan.health.fall,
                };
                let was_up = self.machine.is_up();
                if let Some(up) = self.machine.record(outcome.ok, thresholds) {
                    self.member.backend.set_up(up);
                    self.changed(was_up, up, outcome.reason.clone());
                }
            }
            if !outcome.ok {
                debug!(
                    service = %self.shared.service,
                    backend = %self.member.backend.label(),
                    reason = ?outcome.reason,
                    "probe failed"
                );
            }
            self.report(outcome);
            next = start + self.jitter.interval(plan.health.interval);
        }
    }

    /// A new plan from a reload.
    fn replan(&mut self, old: &Plan, new: &Plan, next: &mut Instant) {
        if old.prober.is_active() && !new.prober.is_active() {
            // With `type: none` nothing would bring a down backend back.
            if !self.machine.is_up() {
                self.machine.force(true);
                self.member.backend.set_up(true);
                self.changed(false, true, "health checks turned off".to_owned());
            }
        } else if !old.prober.is_active() && new.prober.is_active() {
            *next = Instant::now() + self.jitter.first(new.health.interval);
        } else if new.health.interval < old.health.interval {
            *next = (*next).min(Instant::now() + self.jitter.first(new.health.interval));
        }
    }

    /// Someone else (the listener's passive ejection) changed the up flag:
    /// adopt it, log and publish it, and count from zero. True if it changed.
    fn notice_outside_change(&mut self, health: &Health) -> bool {
        let actual = self.member.backend.is_up();
        if actual == self.machine.is_up() {
            return false;
        }
        self.machine.force(actual);
        let reason = if actual {
            "marked up outside the health checker".to_owned()
        } else {
            ejection_reason(health)
        };
        self.changed(!actual, actual, reason);
        true
    }

    /// Logs one transition and publishes it.
    fn changed(&self, from_up: bool, to_up: bool, reason: String) {
        let backend = &self.member.backend;
        if to_up {
            // A backend that probes fine gets a fresh count of connect
            // failures, so one failure after recovery does not eject it again.
            backend.record_connect_success();
        }
        let t = Transition {
            service: self.shared.service.clone(),
            backend: backend.label().to_owned(),
            address: backend.address(),
            from: state(from_up),
            to: state(to_up),
            reason,
            at: SystemTime::now(),
        };
        if to_up {
            info!(service = %t.service, backend = %t.backend, reason = ?t.reason, "backend {} -> {}", t.from, t.to);
        } else {
            warn!(service = %t.service, backend = %t.backend, reason = ?t.reason, "backend {} -> {}", t.from, t.to);
        }
        // No subscriber is fine: the log line is the record.
        let _ = self.shared.transitions.send(t);
    }

    fn report(&self, outcome: Outcome) {
        let backend = &self.member.backend;
        let report = ProbeReport {
            service: self.shared.service.clone(),
            backend: backend.label().to_owned(),
            address: backend.address(),
            ok: outcome.ok,
            reason: outcome.reason,
            failure: outcome.failure,
            at: SystemTime::now(),
            duration: outcome.duration,
            up: self.machine.is_up(),
        };
        let observer = lock(&self.shared.observer).clone();
        if let Some(observe) = observer {
            observe(&report);
        }
        *lock(&self.member.last) = Some(report);
    }
}
