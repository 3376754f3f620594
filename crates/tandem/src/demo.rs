//! `tandem demo`: the embedded default. Three local backends that answer with
//! their own name (HTTP, so curl works), tcp health checks on them, tandem in
//! front of them on 127.0.0.1:PORT, the admin endpoint on 127.0.0.1:ADMIN_PORT,
//! and a list of what to try. Typing 1, 2 or 3 (and Enter) stops or starts that
//! backend, to watch health checks take it out and bring it back. Runs until
//! Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::daemon;

const TEMPLATE: &str = include_str!("demo.yaml");
const NAMES: [&str; 3] = ["backend-1", "backend-2", "backend-3"];

pub fn run(port: u16, admin_port: u16) -> anyhow::Result<ExitCode> {
    daemon::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(port, admin_port))?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(port: u16, admin_port: u16) -> anyhow::Result<()> {
    let mut text = TEMPLATE
        .replace("{PORT}", &port.to_string())
        .replace("{ADMIN}", &admin_port.to_string());
    let mut ports = Vec::new();
    let mut switches = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot start a demo backend on 127.0.0.1")?;
        let backend_port = listener.local_addr()?.port();
        text = text.replace(&format!("{{B{}}}", i + 1), &backend_port.to_string());
        ports.push(backend_port);
        let (switch, running) = watch::channel(true);
        switches.push(switch);
        tokio::spawn(named_backend(listener, backend_port, name, running));
    }
    let path = std::env::temp_dir().join(format!("tandem-demo-{}.yaml", std::process::id()));
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let origin = path.display().to_string();
    let config = tandem_config::parse(&text, &origin)
        .map_err(|e| anyhow::anyhow!("the embedded demo configuration is invalid:\n{e}"))?;

    let me = this_program();
    let admin = format!("127.0.0.1:{admin_port}");
    println!("tandem demo: three backends on 127.0.0.1, tandem in front of them\n");
    for (name, p) in NAMES.iter().zip(&ports) {
        println!("  {name}  127.0.0.1:{p}   tcp health check every 1s");
    }
    println!("  tandem     127.0.0.1:{port}   round robin, splice(2) forwarding");
    println!("  admin      http://{admin}/   status page (open it in a browser)\n");
    println!("Try:");
    println!("  curl -s http://127.0.0.1:{port}/            # answers with the backend's name");
    println!("  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:{port}/; done   # round robin");
    println!("  {me} status --admin {admin}      # backends, health, connections, bytes");
    println!("  curl -s http://{admin}/metrics | grep tandem_backend_up");
    println!("  curl -s -X POST http://{admin}/backends/demo/backend-1/drain    # no new connections to it");
    println!(
        "  curl -s -X POST http://{admin}/backends/demo/backend-1/enable   # back in rotation"
    );
    println!("  cat {origin}         # the configuration in use");
    println!("  {me} check -c {origin}");
    println!("  head -c 100000000 /dev/zero | curl -s --data-binary @- http://127.0.0.1:{port}/ # 100 MB upload");
    println!("\nStop a backend: type 1, 2 or 3 and Enter. Its port closes, two failed health");
    println!("checks (about 2 s) mark it down, new connections go to the others, and the");
    println!("status page shows it red. Type the number again to start it: one good check");
    println!("brings it back.");
    println!("\nLogs follow; Ctrl-C stops (a second Ctrl-C exits at once).\n");
    // The demo holds the switches too, so that stdin closing stops nothing.
    let switches = Arc::new(switches);
    read_commands(Arc::clone(&switches));

    let result = daemon::serve(config, daemon::Source::Embedded(origin), None).await;
    let _ = std::fs::remove_file(&path);
    drop(switches);
    result
}

/// How to run this binary again: its path, relative to here when it is below.
fn this_program() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "tandem".to_owned();
    };
    let relative = std::env::current_dir()
        .ok()
        .and_then(|here| exe.strip_prefix(here).ok().map(|p| p.to_path_buf()));
    relative.unwrap_or(exe).display().to_string()
}

/// Reads lines from stdin on a thread of its own (it may block forever, and
/// must not hold up the runtime's shutdown): `N` toggles backend N.
fn read_commands(switches: Arc<Vec<watch::Sender<bool>>>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            let line = line.trim();
            let chosen = line
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| switches.get(i).map(|s| (i, s)));
            match chosen {
                Some((i, switch)) => {
                    switch.send_modify(|on| *on = !*on);
                    if *switch.borrow() {
                        println!("{} started: one good check brings it back", NAMES[i]);
                    } else {
                        println!(
                            "{} stopped: its port is closed; watch it go down (status page, `status`, logs)",
                            NAMES[i]
                        );
                    }
                }
                None if line.is_empty() => {}
                None => println!(
                    "type 1, 2 or 3 and Enter to stop or start that backend; Ctrl-C ends the demo"
                ),
            }
        }
    });
}

/// Serves `port` while `running` is true; closes the port while it is false
/// (connects are refused and the tcp check fails) and binds it again after.
async fn named_backend(
    listener: TcpListener,
    port: u16,
    name: &'static str,
    mut running: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    loop {
        if let Some(l) = listener.take() {
            serve_until_stopped(&l, name, &mut running).await;
        }
        if running.wait_for(|on| *on).await.is_err() {
            return;
        }
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => listener = Some(l),
            Err(e) => {
                println!("{name} cannot listen on 127.0.0.1:{port} again ({e}); type its number twice to retry");
                if running.wait_for(|on| !*on).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve_until_stopped(
    listener: &TcpListener,
    name: &'static str,
    running: &mut watch::Receiver<bool>,
) {
    // False once nobody can stop it any more (the switch is gone).
    let mut stoppable = true;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, name));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            stopped = async { running.wait_for(|on| !*on).await.is_ok() }, if stoppable => {
                if stopped {
                    return;
                }
                stoppable = false;
            }
        }
    }
}

/// Answers with a tiny HTTP response naming this backend, after reading the
/// request (or after 2 s, for clients that send nothing).
async fn answer(mut stream: TcpStream, name: &'static str) {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 16 * 1024];
    let read_request = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Keep only the head: enough to find where the headers end.
                    if request.len() < 64 * 1024 {
                        request.extend_from_slice(&buf[..n]);
                    }
                    if let Some(end) = find(&request, b"\r\n\r\n") {
                        drain_body(&mut stream, &request, end, &mut buf).await;
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read_request).await;
    let body = format!("{name}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads and discards a request body of `Content-Length` bytes, so an upload
/// is received in full before the answer.
async fn drain_body(stream: &mut TcpStream, head: &[u8], end: usize, buf: &mut [u8]) {
    let headers = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut remaining = length.saturating_sub(head.len() - end - 4);
    while remaining > 0 {
        match stream.read(buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => remaining = remaining.saturating_sub(n),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
