//! `tandem demo`: the embedded default. Three local backends that answer with
//! their own name (HTTP, so curl works), tandem in front of them on
//! 127.0.0.1:PORT, and a list of what to try. Runs until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::daemon;

const TEMPLATE: &str = include_str!("demo.yaml");
const NAMES: [&str; 3] = ["backend-1", "backend-2", "backend-3"];

pub fn run(port: u16) -> anyhow::Result<ExitCode> {
    daemon::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(port))?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(port: u16) -> anyhow::Result<()> {
    let mut text = TEMPLATE.replace("{PORT}", &port.to_string());
    let mut ports = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot start a demo backend on 127.0.0.1")?;
        let backend_port = listener.local_addr()?.port();
        text = text.replace(&format!("{{B{}}}", i + 1), &backend_port.to_string());
        ports.push(backend_port);
        tokio::spawn(named_backend(listener, name));
    }
    let path = std::env::temp_dir().join(format!("tandem-demo-{}.yaml", std::process::id()));
    std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    let origin = path.display().to_string();
    let config = tandem_config::parse(&text, &origin)
        .map_err(|e| anyhow::anyhow!("the embedded demo configuration is invalid:\n{e}"))?;

    println!("tandem demo: three backends on 127.0.0.1, tandem in front of them\n");
    for (name, p) in NAMES.iter().zip(&ports) {
        println!("  {name}  127.0.0.1:{p}");
    }
    println!("  tandem     127.0.0.1:{port}   round robin, splice(2) forwarding\n");
    println!("Try:");
    println!("  curl -s http://127.0.0.1:{port}/            # answers with the backend's name");
    println!("  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:{port}/; done   # round robin");
    println!("  cat {origin}         # the configuration in use");
    println!("  tandem check -c {origin}   # (cargo run --release -p tandem -- check -c ...)");
    println!("  head -c 100000000 /dev/zero | curl -s --data-binary @- http://127.0.0.1:{port}/ # 100 MB upload");
    println!("\nLogs follow; Ctrl-C stops (a second Ctrl-C exits at once).\n");

    let result = daemon::serve(config, daemon::Source::Embedded(origin), None).await;
    let _ = std::fs::remove_file(&path);
    result
}

/// Answers every connection with a tiny HTTP response naming this backend,
/// after reading the request (or after 2 s, for clients that send nothing).
async fn named_backend(listener: TcpListener, name: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(answer(stream, name));
    }
}

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
