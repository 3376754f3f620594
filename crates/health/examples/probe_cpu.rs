//! What probing costs: N backends probed every second against a loopback
//! listener for a while, with the prober's CPU time read from /proc.
//!
//!     cargo run --release -p tandem-health --example probe_cpu -- [tcp|http|https] [backends] [seconds]
//!
//! Defaults: tcp, 1000 backends, 10 s. `https-full` is `https` against a
//! listener that refuses TLS session resumption: a full handshake every probe. The listener runs in a child process
//! (this same binary with `--listener`), so the CPU time reported for the
//! prober is the prober's alone. Traffic goes to 127.0.0.1 only; the run is
//! bounded in time and the child exits when its stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU32;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_config::{Health, HealthKind};
use tandem_core::{Backend, BackendAddress};
use tandem_health::{Checker, ProbeReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--listener") {
        listener(args.get(1).map(String::as_str).unwrap_or("tcp"));
        return;
    }
    let mode = args.first().map_or("tcp", String::as_str).to_owned();
    let kind = match mode.as_str() {
        "tcp" => HealthKind::Tcp,
        "http" => HealthKind::Http,
        "https" | "https-full" => HealthKind::Https,
        other => panic!("unknown mode `{other}`: tcp, http, https or https-full"),
    };
    let count: usize = args.get(1).map_or(1000, |s| s.parse().expect("backends"));
    let seconds: u64 = args.get(2).map_or(10, |s| s.parse().expect("seconds"));

    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["--listener", &mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the listener process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("child stdout"))
        .read_line(&mut line)
        .expect("listener port");
    let addr: std::net::SocketAddr = line.trim().parse().expect("listener address");

    let mut health = Health::defaults(kind);
    health.interval = Duration::from_secs(1);
    health.path = "/readyz".to_owned();
    health.tls.verify = false;
    let backends: Vec<Arc<Backend>> = (0..count)
        .map(|i| {
            Arc::new(Backend::new(
                BackendAddress(addr),
                Some(&format!("b{i}")),
                NonZeroU32::MIN,
                false,
                false,
            ))
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let probes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let busy_ns = Arc::new(AtomicU64::new(0));
    let checker = Checker::new("bench", &health, backends.clone()).expect("checker");
    {
        let (p, f, d) = (probes.clone(), failed.clone(), busy_ns.clone());
        checker
            .handle()
            .set_probe_observer(Some(Arc::new(move |r: &ProbeReport| {
                p.fetch_add(1, Relaxed);
                d.fetch_add(r.duration.as_nanos() as u64, Relaxed);
                if !r.ok {
                    f.fetch_add(1, Relaxed);
                }
            })));
    }
    let stop = CancellationToken::new();
    let run = runtime.spawn(checker.run(stop.clone()));

    // One interval for the random first offsets to spread, then measure.
    std::thread::sleep(Duration::from_millis(1500));
    let (p0, f0, d0) = (
        probes.load(Relaxed),
        failed.load(Relaxed),
        busy_ns.load(Relaxed),
    );
    let cpu0 = cpu_ns("self");
    let child0 = cpu_ns(&child.id().to_string());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let wall = t0.elapsed();
    let cpu = cpu_ns("self") - cpu0;
    let child_cpu = cpu_ns(&child.id().to_string()) - child0;
    let n = probes.load(Relaxed) - p0;
    let nf = failed.load(Relaxed) - f0;
    let mean = Duration::from_nanos((busy_ns.load(Relaxed) - d0) / n.max(1));
    let up = backends.iter().filter(|b| b.is_up()).count();

    stop.cancel();
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), run).await })
        .expect("checker stops")
        .expect("checker task");
    drop(child.stdin.take());
    let _ = child.wait();

    let cpu_s = cpu as f64 / 1e9;
    println!(
        "{mode}: {count} backends, interval 1s, {:.1}s measured: {n} probes ({:.0}/s), {nf} failed, {up} up, mean probe {:?}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        mean,
    );
    println!(
        "prober CPU: {cpu_s:.3}s = {:.1}% of one core, {:.1}us per probe; listener process CPU: {:.3}s",
        100.0 * cpu_s / wall.as_secs_f64(),
        cpu as f64 / 1e3 / n.max(1) as f64,
        child_cpu as f64 / 1e9,
    );
    let _ = std::io::stdout().flush();
}

/// CPU time (user + system) of a process, in ns: the sum over its threads
/// of the first field of /proc/PID/task/TID/schedstat (ns on a CPU), which is
/// finer than the clock ticks of /proc/PID/stat. Threads that ended before
/// the read are missing from both readings' difference only if they ran in
/// between, which the runtime's fixed worker threads do not.
fn cpu_ns(pid: &str) -> u64 {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .expect("/proc task dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The child: accept and answer on 127.0.0.1 until stdin closes (or 10 min).
fn listener(mode: &str) {
    let tls = mode.starts_with("https");
    let resume = mode != "https-full";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let acceptor = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["kubernetes".to_owned()])
                .expect("certificate");
            let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server config");
            let mut config = config;
            if !resume {
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        let _ = std::io::stdout().flush();
        let serve = async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(mut t) = a.accept(s).await {
                                answer(&mut t).await;
                            }
                        }
                        None => {
                            let mut s = s;
                            answer(&mut s).await;
                        }
                    }
                });
            }
        };
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        });
        tokio::select! {
            _ = serve => {}
            _ = stdin_closed => {}
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    });
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    let mut buf = [0u8; 2048];
    // A tcp probe sends nothing and closes: read returns 0.
    if let Ok(n) = s.read(&mut buf).await {
        if n > 0 {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
            let _ = s.shutdown().await;
            let _ = s.read(&mut buf).await;
        }
    }
}
