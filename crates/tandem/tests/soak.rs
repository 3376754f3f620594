//! Soak: many clients of mixed kinds through the real binary while it is
//! reloaded every second and a backend is killed and restarted every 10 s.
//! Not in the default suite (`#[ignore]`); run it with
//!
//!     cargo test --release -p tandem --test soak -- --ignored --nocapture
//!
//! `TANDEM_SOAK_SECONDS` (default 120, at most 300) and `TANDEM_SOAK_CLIENTS`
//! (default 2000) change the load. Holds: no byte corrupted; failed
//! connections at most those in flight to a backend when it was killed; the
//! daemon's descriptors and memory back to their baseline afterwards.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bin;
use test_support::{free_addr, pattern, Tandem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// An echo backend that can be killed (listener and every connection gone at
/// once, as when the process dies) and started again on the same address.
struct KillableEcho {
    addr: SocketAddr,
    run: Option<JoinSet<()>>,
    active: Arc<AtomicU64>,
}

impl KillableEcho {
    async fn start(addr: SocketAddr) -> Self {
        let mut e = KillableEcho {
            addr,
            run: None,
            active: Arc::new(AtomicU64::new(0)),
        };
        e.restart().await;
        e
    }

    async fn restart(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener: TcpListener = socket.listen(4096).unwrap();
        let mut set = JoinSet::new();
        let active = Arc::clone(&self.active);
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut s, _)) = accepted else { continue };
                        let active = Arc::clone(&active);
                        conns.spawn(async move {
                            active.fetch_add(1, SeqCst);
                            let (mut r, mut w) = s.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            let _ = w.shutdown().await;
                            active.fetch_sub(1, SeqCst);
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        self.run = Some(set);
    }

    /// Kills it; returns how many connections it held.
    async fn kill(&mut self) -> u64 {
        let held = self.active.load(SeqCst);
        if let Some(mut set) = self.run.take() {
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
        // Aborted connection tasks never ran their decrement.
        self.active.store(0, SeqCst);
        held
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    corrupted: AtomicU64,
    bytes: AtomicU64,
    by_kind: Mutex<HashMap<&'static str, (u64, u64)>>,
}

impl Tally {
    fn record(&self, kind: &'static str, result: Result<u64, Outcome>) {
        let mut by_kind = self.by_kind.lock().unwrap();
        let entry = by_kind.entry(kind).or_default();
        match result {
            Ok(bytes) => {
                self.ok.fetch_add(1, SeqCst);
                self.bytes.fetch_add(bytes, SeqCst);
                entry.0 += 1;
            }
            Err(Outcome::Failed) => {
                self.failed.fetch_add(1, SeqCst);
                entry.1 += 1;
            }
            Err(Outcome::Corrupted) => {
                self.corrupted.fetch_add(1, SeqCst);
                entry.1 += 1;
            }
        }
    }
}

enum Outcome {
    Failed,
    Corrupted,
}

static WHY: Mutex<Vec<(Instant, &'static str)>> = Mutex::new(Vec::new());
static CONNECT_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn failed(why: &'static str) -> Outcome {
    WHY.lock().unwrap().push((Instant::now(), why));
    Outcome::Failed
}

/// Sends `data` in `chunk`-sized writes, pausing `gap` between them, and
/// checks that the same bytes come back.
async fn echo(to: SocketAddr, data: &[u8], chunk: usize, gap: Duration) -> Result<u64, Outcome> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to))
        .await
        .map_err(|_| failed("connect timeout"))?
        .map_err(|e| {
            CONNECT_ERRORS.lock().unwrap().push(e.to_string());
            failed("connect error")
        })?;
    let (mut r, mut w) = stream.into_split();
    let owned = data.to_vec();
    let writer = tokio::spawn(async move {
        for part in owned.chunks(chunk) {
            w.write_all(part).await?;
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        w.shutdown().await
    });
    let mut back = Vec::with_capacity(data.len());
    let read = tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back)).await;
    let wrote = writer.await.map_err(|_| failed("writer panicked"))?;
    match (read, wrote) {
        (Ok(Ok(_)), Ok(())) if back == data => Ok(data.len() as u64),
        (Ok(Ok(_)), Ok(())) if data.starts_with(&back) && back.is_empty() => {
            Err(failed("closed before any byte"))
        }
        (Ok(Ok(_)), Ok(())) if data.starts_with(&back) => Err(failed("closed early")),
        (Ok(Ok(_)), Ok(())) => Err(Outcome::Corrupted),
        _ if !data.starts_with(&back) => Err(Outcome::Corrupted),
        (Err(_), _) => Err(failed("read timeout")),
        (Ok(Err(_)), _) => Err(failed("read error")),
        (_, Err(_)) => Err(failed("write error")),
    }
}

/// The daemon's descriptors: (sockets, pipes, others). Idle splice pipes
/// stay pooled (up to 256) by design.
fn fds_of(pid: u32) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return counts;
    };
    for entry in dir.flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if target.starts_with("socket:") {
            counts.0 += 1;
        } else if target.starts_with("pipe:") {
            counts.1 += 1;
        } else {
            counts.2 += 1;
        }
    }
    counts
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn yaml(admin: SocketAddr, listen: SocketAddr, backends: &[SocketAddr], round: u32) -> String {
    // Each reload changes something real: the first backend's weight.
    let mut y = format!(
        "admin:\n  listen: {admin}\nservices:\n  - name: soak\n    listen: {listen}\n    scheduler: least_connections\n    connect_retries: 2\n    connect_timeout: 1s\n    health: {{ type: tcp, interval: 500ms, timeout: 400ms, fall: 1, rise: 1, initial: up }}\n    backends:\n"
    );
    for (i, b) in backends.iter().enumerate() {
        let weight = if i == 0 { 1 + round % 3 } else { 1 };
        y.push_str(&format!(
            "      - {{ address: \"{b}\", weight: {weight} }}\n"
        ));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of minutes: cargo test --release -p tandem --test soak -- --ignored"]
async fn mixed_clients_survive_reloads_and_backend_kills() {
    let seconds: u64 = std::env::var("TANDEM_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
        .min(300);
    let clients: usize = std::env::var("TANDEM_SOAK_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut backends = Vec::new();
    for a in &addrs {
        backends.push(KillableEcho::start(*a).await);
    }
    let (admin, listen) = (free_addr(), free_addr());
    let mut tandem = Tandem::spawn_with_args(bin(), &yaml(admin, listen, &addrs, 0), &[]);
    tandem.wait_listening(listen);
    let pid = tandem.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds_before, rss_before) = (fds_of(pid), rss_kib(pid));

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let bulk = Arc::new(pattern(4 << 20, 7));
    let mut load = JoinSet::new();
    for c in 0..clients {
        let tally = Arc::clone(&tally);
        let bulk = Arc::clone(&bulk);
        load.spawn(async move {
            // Every client runs until the deadline, one connection at a time.
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let (kind, result) = match c % 20 {
                    // 1 in 20: bulk, 4 MiB each way.
                    0 => ("bulk", echo(listen, &bulk, 64 << 10, Duration::ZERO).await),
                    // 4 in 20: long, 20 small messages 250 ms apart (5 s).
                    1..=4 => {
                        let data = pattern(20 * 100, c as u64 * 31 + n);
                        (
                            "long",
                            echo(listen, &data, 100, Duration::from_millis(250)).await,
                        )
                    }
                    // The rest: short, 1 KiB and close.
                    _ => {
                        let data = pattern(1024, c as u64 * 17 + n);
                        let r = echo(listen, &data, 1024, Duration::ZERO).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        ("short", r)
                    }
                };
                tally.record(kind, result);
            }
        });
    }

    let mut kill_times = Vec::new();
    let mut allowance = 0u64;
    let mut kills = Vec::new();
    let mut reloads = 0u32;
    let started = Instant::now();
    let mut next_kill = started + Duration::from_secs(10);
    let mut victim = 0usize;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        reloads += 1;
        std::fs::write(tandem.config_path(), yaml(admin, listen, &addrs, reloads)).unwrap();
        tandem.signal("HUP");
        if Instant::now() >= next_kill {
            // tandem's own count: also the connections still in the
            // backend's accept queue, which die with it.
            // tandem's own counts, which include the connections still in the
            // backend's accept queue (they die with it): those open before the
            // kill, plus those opened while it was being killed.
            let of_victim = |metrics: &str, name: &str| {
                let series = format!("{name}{{service=\"soak\",backend=\"{}\"}}", addrs[victim]);
                common::sample(metrics, &series).unwrap_or(0.0) as u64
            };
            let (_, before) = common::http(admin, "GET", "/metrics", &[]).await;
            kill_times.push(Instant::now());
            let accepted = backends[victim].kill().await;
            let (_, after) = common::http(admin, "GET", "/metrics", &[]).await;
            let opened_meanwhile = of_victim(&after, "tandem_connections_total")
                - of_victim(&before, "tandem_connections_total");
            let held =
                (of_victim(&before, "tandem_active_connections") + opened_meanwhile).max(accepted);
            allowance += held;
            kills.push(held);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            backends[victim].restart().await;
            victim = (victim + 1) % backends.len();
            next_kill += Duration::from_secs(10);
        }
    }
    while load.join_next().await.is_some() {}
    let elapsed = started.elapsed();

    // Let idle connections close and the daemon settle, then compare.
    let settle = Instant::now();
    let mut fds_after = fds_of(pid);
    while fds_after.0 > fds_before.0 && settle.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds_after = fds_of(pid);
    }
    let rss_after = rss_kib(pid);
    let (ok, failed, corrupted) = (
        tally.ok.load(SeqCst),
        tally.failed.load(SeqCst),
        tally.corrupted.load(SeqCst),
    );
    let logs = tandem.logs();
    let reload_failures = logs.matches("reload failed").count();
    println!(
        "soak: {seconds} s, {clients} clients, {reloads} reloads ({reload_failures} failed), kills {kills:?} (in flight, total {allowance})\n\
         connections: {ok} ok, {failed} failed, {corrupted} corrupted; {} MB echoed; by kind {:?}\n\
         daemon descriptors (sockets, pipes, other) {fds_before:?} -> {fds_after:?}, RSS {rss_before} -> {rss_after} KiB (peak load {:.0?})",
        tally.bytes.load(SeqCst) >> 20,
        tally.by_kind.lock().unwrap(),
        elapsed
    );
    let mut why: HashMap<(&str, bool), u64> = HashMap::new();
    for (at, w) in WHY.lock().unwrap().iter() {
        let near = kill_times
            .iter()
            .any(|k| *at >= *k && at.duration_since(*k) < Duration::from_secs(3));
        *why.entry((*w, near)).or_default() += 1;
    }
    println!("failures (why, within 3 s of a kill): {why:?}");
    let mut errors = CONNECT_ERRORS.lock().unwrap().clone();
    errors.dedup();
    println!("connect errors: {errors:?}");
    let mut warnings: HashMap<String, u64> = HashMap::new();
    for line in logs
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        let message: String = line
            .split_whitespace()
            .skip(3)
            .filter(|w| !w.contains('=') && !w.contains(':'))
            .take(8)
            .collect::<Vec<_>>()
            .join(" ");
        *warnings.entry(message).or_default() += 1;
    }
    println!("daemon warnings: {warnings:?}");
    if fds_after.0 > fds_before.0 {
        let out = std::process::Command::new("ss")
            .args(["-tanp"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mine = format!("pid={pid},");
        let mut states: HashMap<String, u64> = HashMap::new();
        for l in out.lines().filter(|l| l.contains(&mine)) {
            let state = l.split_whitespace().next().unwrap_or("?").to_owned();
            *states.entry(state).or_default() += 1;
        }
        println!("daemon sockets by state: {states:?}");
    }
    assert_eq!(corrupted, 0, "corrupted connections");
    assert!(
        failed <= allowance,
        "{failed} failed connections, but only {allowance} were in flight at the kills"
    );
    assert_eq!(reload_failures, 0, "{logs}");
    assert!(ok > clients as u64, "{ok} connections completed");
    assert!(
        fds_after.0 <= fds_before.0 && fds_after.2 <= fds_before.2,
        "descriptors {fds_before:?} -> {fds_after:?}"
    );
    assert!(
        fds_after.1 <= 2 * 256,
        "pipes beyond the pool: {fds_after:?}"
    );
    assert!(
        rss_after <= rss_before + rss_before / 2 + 16 * 1024,
        "RSS {rss_before} -> {rss_after} KiB"
    );
}
