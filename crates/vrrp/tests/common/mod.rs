//! VRRP nodes for the namespace tests: each node is a thread inside its
//! host's network namespace running `Vrrp` on a current-thread runtime.
#![allow(dead_code)]

use std::net::IpAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::{Encoder, Registry, TextEncoder};
use tandem_vrrp::{InstanceState, InstanceStatus, Vrrp, VrrpHandle};
use test_support::netns::Host;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// The longest any wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A tandem VRRP node on a host.
pub struct Node {
    pub host: Host,
    shutdown: CancellationToken,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub handle: VrrpHandle,
    status: watch::Receiver<Vec<InstanceStatus>>,
    registry: Registry,
}

/// A YAML file with these vrrp instances (and a service `api` to track).
pub fn config(instances: &str) -> tandem_config::Config {
    let yaml = format!(
        "services:\n  - {{ name: api, listen: 198.18.0.100:8443, backends: [{{ address: 198.18.0.11:6443 }}] }}\nvrrp:\n  instances:\n{instances}"
    );
    tandem_config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

impl Node {
    /// Starts the instances of `instances` (YAML list items, indented by 4).
    pub fn start(host: &Host, instances: &str) -> Node {
        init_logs();
        let cfg = config(instances);
        let registry = Registry::new();
        let vrrp = Vrrp::new(&cfg.vrrp.instances, &registry).expect("vrrp");
        let handle = vrrp.handle();
        let status = vrrp.subscribe();
        let shutdown = CancellationToken::new();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let token = shutdown.clone();
        let thread = host.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tokio::select! {
                    _ = vrrp.run(token) => {}
                    // A crash: the run future is dropped mid-flight, no
                    // priority 0, VIPs left behind.
                    _ = kill_rx => {}
                }
            });
        });
        Node {
            host: host.clone(),
            shutdown,
            kill: Some(kill_tx),
            thread: Some(thread),
            handle,
            status,
            registry,
        }
    }

    /// Graceful stop: masters resign with priority 0 and remove their VIPs.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        self.join();
    }

    /// Dies like SIGKILL: no goodbye, VIPs stay on the interface.
    pub fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        self.join();
    }

    /// Waits (at most [`PATIENCE`]) for the node's thread to end.
    fn join(&mut self) {
        let Some(t) = self.thread.take() else {
            return;
        };
        let ended = test_support::netns::wait_for(PATIENCE, || t.is_finished());
        if ended.is_none() {
            // Leave the thread behind rather than hang the test run.
            if !std::thread::panicking() {
                panic!(
                    "the node on {} did not stop within {PATIENCE:?}",
                    self.host.ns()
                );
            }
            return;
        }
        let _ = t.join();
    }

    pub fn status(&self) -> Vec<InstanceStatus> {
        self.status.borrow().clone()
    }

    pub fn state(&self, instance: usize) -> InstanceState {
        self.status()[instance].state
    }

    pub fn master_of(&self, instance: usize) -> Option<IpAddr> {
        self.status()[instance].master
    }

    pub fn metrics(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encode metrics");
        String::from_utf8(out).expect("utf-8 metrics")
    }

    /// The value of one series (`name{labels}` exactly as exposed), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Total of `tandem_vrrp_invalid_packets_total` over every reason.
    pub fn invalid_packets(&self) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("tandem_vrrp_invalid_packets_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.join();
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tandem_vrrp=info".into()),
        )
        .try_init();
}

/// Waits until `cond` holds; panics with `what` after [`PATIENCE`].
pub fn eventually(what: &str, cond: impl FnMut() -> bool) -> Duration {
    test_support::netns::wait_for(PATIENCE, cond)
        .unwrap_or_else(|| panic!("timed out after {PATIENCE:?} waiting for: {what}"))
}

/// Checks that `cond` holds for the whole of `period`.
pub fn stays(what: &str, period: Duration, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + period;
    while std::time::Instant::now() < end {
        assert!(cond(), "no longer true: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
